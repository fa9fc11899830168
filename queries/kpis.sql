-- kpis: the closed loop's indicators per month, region and department (DOMAIN.md §3, §7), with
-- the effective evaluation rate beside them.
--
-- From `bad_reviews` (the month a bad review was given; excluded reviews, found mistaken or
-- malicious, drop out of every rate):
--   reply_rate                  replied / bad reviews                      (target 100 %, 004)
--   on_time_rectification_rate  rectified by the deadline / bad reviews    (target 100 %, 000)
--   revisit_rate                revisited / rectified                      (001 §19, 004 一(二)4)
-- From the `evaluation_rates` view (queries/evaluation_rates.sql, the month a case was finished):
--   active_rate, rate_with_defaults: evaluated finished cases / finished cases (000 二(二)).
WITH loop AS (
    SELECT
        month,
        province_code,
        city_code,
        county_code,
        dept_code,
        max(dept_name) AS dept_name,
        sum(CASE WHEN NOT excluded THEN 1 ELSE 0 END) AS bad_reviews,
        sum(CASE WHEN excluded THEN 1 ELSE 0 END) AS excluded,
        sum(CASE WHEN NOT excluded AND replied_at IS NOT NULL THEN 1 ELSE 0 END) AS replied,
        sum(CASE WHEN NOT excluded AND rectified_at IS NOT NULL THEN 1 ELSE 0 END) AS rectified,
        sum(CASE WHEN NOT excluded AND rectified_on_time THEN 1 ELSE 0 END) AS rectified_on_time,
        sum(CASE WHEN NOT excluded AND revisited_at IS NOT NULL THEN 1 ELSE 0 END) AS revisited
    FROM bad_reviews
    GROUP BY month, province_code, city_code, county_code, dept_code
)
SELECT
    coalesce(l.month, r.month) AS month,
    coalesce(l.province_code, r.province_code) AS province_code,
    coalesce(l.city_code, r.city_code) AS city_code,
    coalesce(l.county_code, r.county_code) AS county_code,
    coalesce(l.dept_code, r.dept_code) AS dept_code,
    coalesce(l.dept_name, r.dept_name) AS dept_name,
    coalesce(l.bad_reviews, 0) AS bad_reviews,
    coalesce(l.excluded, 0) AS excluded,
    CASE WHEN l.bad_reviews > 0 THEN round(CAST(l.replied AS DOUBLE) / l.bad_reviews, 4) END
        AS reply_rate,
    CASE WHEN l.bad_reviews > 0
        THEN round(CAST(l.rectified_on_time AS DOUBLE) / l.bad_reviews, 4) END
        AS on_time_rectification_rate,
    CASE WHEN l.rectified > 0 THEN round(CAST(l.revisited AS DOUBLE) / l.rectified, 4) END
        AS revisit_rate,
    coalesce(r.finished_cases, 0) AS finished_cases,
    r.active_rate,
    r.rate_with_defaults
FROM loop l
FULL OUTER JOIN evaluation_rates r
    ON r.month = l.month
    AND r.province_code = l.province_code
    AND (r.county_code IS NOT DISTINCT FROM l.county_code)
    AND r.dept_code = l.dept_code
ORDER BY month, province_code, city_code, county_code, dept_code
