-- evaluation_rates: the effective evaluation rate (有效评价率) per month, region and department: of
-- the cases finished in the month, how many were evaluated by the person served, how many got their
-- region's default evaluation, and how many have neither yet (their period has not passed).
--
-- The target is 100 % on site and online (000 二(二)1–2); GB/T 39734 also asks for the unevaluated
-- share (未评率). `active_rate` counts only real evaluations, `rate_with_defaults` the defaults too.
-- A case counts in the month (CST) it was finished (its `dt`), whenever it was evaluated.
WITH finished AS (
    SELECT DISTINCT project_no, substr(dt, 1, 7) AS month, province_code, city_code, county_code,
           dept_code, dept_name
    FROM cases
    WHERE status = 3
),
evaluated AS (SELECT DISTINCT project_no FROM evaluations),
defaulted AS (SELECT DISTINCT project_no FROM default_evaluations)
SELECT
    f.month,
    f.province_code,
    f.city_code,
    f.county_code,
    f.dept_code,
    max(f.dept_name) AS dept_name,
    count(*) AS finished_cases,
    count(e.project_no) AS evaluated,
    count(CASE WHEN e.project_no IS NULL THEN d.project_no END) AS defaulted,
    count(*) - count(e.project_no) - count(CASE WHEN e.project_no IS NULL THEN d.project_no END)
        AS not_yet_evaluated,
    round(CAST(count(e.project_no) AS DOUBLE) / count(*), 4) AS active_rate,
    round(
        CAST(count(e.project_no) + count(CASE WHEN e.project_no IS NULL THEN d.project_no END) AS DOUBLE)
            / count(*),
        4
    ) AS rate_with_defaults
FROM finished f
LEFT JOIN evaluated e ON e.project_no = f.project_no
LEFT JOIN defaulted d ON d.project_no = f.project_no
GROUP BY f.month, f.province_code, f.city_code, f.county_code, f.dept_code
ORDER BY f.month, f.province_code, f.city_code, f.county_code, f.dept_code
