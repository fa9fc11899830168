-- Daily satisfaction per city: volume, good-review rate (levels 3–5), bad-review rate (levels 1–2),
-- and the share of evaluations people gave on site (window devices and self-service terminals).
-- Rates follow DOMAIN.md §2: good = 非常满意 + 满意 + 基本满意, bad = 不满意 + 非常不满意.
SELECT
    dt,
    city,
    count(*)                                                         AS evaluations,
    round(avg(CAST(satisfaction >= 3 AS INT)) * 100, 2)              AS good_rate_pct,
    round(avg(CAST(bad_review AS INT)) * 100, 2)                     AS bad_rate_pct,
    round(avg(satisfaction), 3)                                      AS avg_satisfaction,
    round(avg(CAST(channel IN ('hall_window', 'hall_other') AS INT)) * 100, 1) AS on_site_pct
FROM evaluations
GROUP BY dt, city
ORDER BY dt, city;
