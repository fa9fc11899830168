-- Good-review and bad-review rate rankings of departments (好评率/差评率排名, DOMAIN.md §4), among
-- departments with at least 20 evaluations. Listed worst first: the bottom of the ranking is what
-- gets a warning, an interview and a deadline (001 §24, 002 §16).
SELECT
    dept_code,
    dept_name,
    count(*)                                                AS evaluations,
    sum(CAST(bad_review AS INT))                            AS bad_reviews,
    round(avg(CAST(satisfaction >= 3 AS INT)) * 100, 2)     AS good_rate_pct,
    round(avg(CAST(bad_review AS INT)) * 100, 2)            AS bad_rate_pct,
    rank() OVER (ORDER BY avg(CAST(satisfaction >= 3 AS INT)) DESC) AS good_rate_rank,
    rank() OVER (ORDER BY avg(CAST(bad_review AS INT)) DESC)        AS bad_rate_rank
FROM evaluations
GROUP BY dept_code, dept_name
HAVING count(*) >= 20
ORDER BY bad_rate_rank, evaluations DESC, dept_code
LIMIT 20;
