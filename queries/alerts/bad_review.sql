-- Every accepted bad review (差评: satisfaction 2 不满意 or 1 非常不满意) is forwarded to the evaluated
-- department within 2 working days (DOMAIN.md §3; 004 一(二)1). Runs over each deduplicated
-- micro-batch as it passes, before the Parquet flush.
--
-- Every alert rule returns the same columns: rule, severity, related_reviews (how many bad reviews
-- the rule looked at, this one included), and the key of the evaluation that fires it; the engine
-- fills the alert's body from that evaluation's row.
SELECT
    'bad_review' AS rule,
    CASE WHEN satisfaction = 1 THEN 'high' ELSE 'medium' END AS severity,
    CAST(1 AS BIGINT) AS related_reviews,
    project_no,
    assess_number
FROM batch
WHERE bad_review;
