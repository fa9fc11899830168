-- Good-review and bad-review rate ranking of departments (好评率/差评率排名, DOMAIN.md §4), among
-- departments with at least 20 evaluations; rank 1 is the best good-review rate.
SELECT
    dept_code,
    dept_name,
    count(*)                                                AS evaluations,
    round(avg(CAST(satisfaction >= 3 AS INT)) * 100, 2)     AS good_rate_pct,
    round(avg(CAST(bad_review AS INT)) * 100, 2)            AS bad_rate_pct,
    rank() OVER (ORDER BY avg(CAST(satisfaction >= 3 AS INT)) DESC, count(*) DESC) AS good_rate_rank
FROM evaluations
GROUP BY dept_code, dept_name
HAVING count(*) >= 20
ORDER BY good_rate_rank, dept_code
LIMIT 30;
