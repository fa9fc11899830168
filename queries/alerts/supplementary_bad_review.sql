-- A bad review given as a supplementary evaluation (补充评价, assess_number 2): the evaluator came
-- back after the case to say it went badly, often because an earlier complaint was not resolved.
SELECT
    'supplementary_bad_review' AS rule,
    'high' AS severity,
    CAST(1 AS BIGINT) AS related_reviews,
    project_no,
    assess_number
FROM batch
WHERE bad_review AND assess_number = 2;
