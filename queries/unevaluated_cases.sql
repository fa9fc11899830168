-- unevaluated_cases: finished cases (status 3) that have no evaluation at all, neither a first nor a
-- supplementary one, with what their default evaluation needs (DOMAIN.md §2 "Default evaluation").
--
-- The region's policy decides the level and the period (src/analytics/defaults.rs); the period counts
-- from the service being finished (Fujian 002 §5, Jilin 001 §10) or from the case being generated
-- (Xuchang 003 制度 §9): `applied_at` comes from the finished record, else from the case's pending
-- record.
SELECT
    c.project_no,
    c.task_code,
    c.task_name,
    c.dept_code,
    c.dept_name,
    c.area_code,
    c.province_code,
    c.city_code,
    c.county_code,
    c.applicant_key,
    COALESCE(c.applied_at, p.applied_at) AS applied_at,
    c.finished_at
FROM cases c
LEFT JOIN (SELECT DISTINCT project_no FROM evaluations) e ON e.project_no = c.project_no
LEFT JOIN (
    SELECT project_no, min(applied_at) AS applied_at FROM cases WHERE status = 1 GROUP BY project_no
) p ON p.project_no = c.project_no
WHERE c.status = 3 AND e.project_no IS NULL
ORDER BY c.project_no
