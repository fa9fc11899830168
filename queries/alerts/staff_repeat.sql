-- The same staff member's second (or later) bad review within 24 hours (by the time each was given):
-- one bad review may be bad luck, two in a day is a pattern the department should see at once.
-- `recent_bad_reviews` holds the bad reviews of the last 30 days this instance knows of (the lake's
-- at start, then every micro-batch's); two reviews given at the same instant each count the other.
WITH known AS (
    SELECT project_no, assess_number, staff_id, assessed_at FROM recent_bad_reviews
    UNION ALL
    SELECT project_no, assess_number, staff_id, assessed_at FROM batch WHERE bad_review
)
SELECT
    'staff_repeat' AS rule,
    'high' AS severity,
    count(*) + 1 AS related_reviews,
    b.project_no,
    b.assess_number
FROM batch b
JOIN known k
  ON k.staff_id = b.staff_id
 AND k.assessed_at > b.assessed_at - INTERVAL '24 hours'
 AND k.assessed_at <= b.assessed_at
 AND (k.project_no <> b.project_no OR k.assess_number <> b.assess_number)
WHERE b.bad_review AND b.staff_id IS NOT NULL
GROUP BY b.project_no, b.assess_number;
