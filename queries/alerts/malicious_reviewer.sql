-- A possible malicious reviewer (恶意差评, 003 二(五)): the same evaluator's third bad review within
-- 30 days, across two departments or more. Evaluators are known only by their keyed hash
-- (evaluator_key); anonymous evaluations have none and never fire this rule.
WITH known AS (
    SELECT project_no, assess_number, evaluator_key, dept_code, assessed_at FROM recent_bad_reviews
    UNION ALL
    SELECT project_no, assess_number, evaluator_key, dept_code, assessed_at FROM batch WHERE bad_review
)
SELECT
    'malicious_reviewer' AS rule,
    'medium' AS severity,
    count(*) AS related_reviews,
    b.project_no,
    b.assess_number
FROM batch b
JOIN known k
  ON k.evaluator_key = b.evaluator_key
 AND k.assessed_at > b.assessed_at - INTERVAL '30 days'
 AND k.assessed_at <= b.assessed_at
WHERE b.bad_review AND b.evaluator_key IS NOT NULL
GROUP BY b.project_no, b.assess_number
HAVING count(*) >= 3 AND count(DISTINCT k.dept_code) >= 2;
