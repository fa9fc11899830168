-- rankings: one period's good-review and bad-review rates and ranks of every department, region
-- (province, city, county, township), staff member, service item and channel (DOMAIN.md §4).
--
-- * Rows: effective_evaluations (one evaluation per case, exclusions removed: see that file).
-- * good = levels 5–3 (非常满意, 满意, 基本满意), bad = levels 2–1 (不满意, 非常不满意);
--   good_rate = good / evaluations, bad_rate = bad / evaluations (004 三(一)9). Every evaluation
--   is one or the other, so the two rates add up to 1.
-- * Ranks use RANK(): tied rates share a rank and the next rank is skipped (1, 2, 2, 4).
--   good_rate_rank 1 = the highest good rate; bad_rate_rank 1 = the highest bad rate, i.e. the
--   bottom of the good-rate ranking (what gets a warning). Only entities with at least
--   {{min_evaluations}} evaluations in the period are ranked; the others have NULL ranks.
-- * previous_* = the same entity in the previous period (the month, half-year or year before; for a
--   rolling 30 days, the 30 days before); *_change = this period minus the previous one.
-- * Staff are identified by department and staff number ("dept_code/staff_id"); their names are
--   personal data and are not in this table.
--
-- Parameters: {{period_start}}, {{period_end}} (dt range [start, end)), {{previous_start}} (the
-- previous period is [previous_start, period_start)), {{period_first_day}}, {{period_last_day}},
-- {{period_seq}}, {{min_evaluations}}.
WITH reviews AS (
    SELECT
        dept_code, dept_name, province_code, city_code, county_code, township_code,
        staff_id, task_code, task_name, channel,
        satisfaction >= 3        AS good,
        bad_review               AS bad,
        dt >= '{{period_start}}' AS in_period
    FROM effective_evaluations
    WHERE dt >= '{{previous_start}}' AND dt < '{{period_end}}'
),
entity_rows AS (
    SELECT
        t.entity_type,
        CASE t.entity_type
            WHEN 'department' THEN r.dept_code
            WHEN 'province'   THEN r.province_code
            WHEN 'city'       THEN r.city_code
            WHEN 'county'     THEN r.county_code
            WHEN 'township'   THEN r.township_code
            WHEN 'staff'      THEN r.dept_code || '/' || r.staff_id
            WHEN 'item'       THEN r.task_code
            WHEN 'channel'    THEN r.channel
        END AS entity_id,
        CASE t.entity_type
            WHEN 'department' THEN r.dept_name
            WHEN 'item'       THEN r.task_name
            WHEN 'channel'    THEN r.channel
        END AS entity_name,
        r.good, r.bad, r.in_period
    FROM reviews r
    CROSS JOIN (VALUES ('department'), ('province'), ('city'), ('county'), ('township'),
                       ('staff'), ('item'), ('channel')) AS t(entity_type)
),
counts AS (
    SELECT
        entity_type,
        entity_id,
        max(entity_name)                                          AS entity_name,
        sum(CASE WHEN in_period THEN 1 ELSE 0 END)                AS evaluations,
        sum(CASE WHEN in_period AND good THEN 1 ELSE 0 END)       AS good,
        sum(CASE WHEN in_period AND bad THEN 1 ELSE 0 END)        AS bad,
        sum(CASE WHEN NOT in_period THEN 1 ELSE 0 END)            AS previous_evaluations,
        sum(CASE WHEN NOT in_period AND good THEN 1 ELSE 0 END)   AS previous_good,
        sum(CASE WHEN NOT in_period AND bad THEN 1 ELSE 0 END)    AS previous_bad
    FROM entity_rows
    WHERE entity_id IS NOT NULL
    GROUP BY entity_type, entity_id
),
rates AS (
    SELECT
        *,
        CAST(good AS DOUBLE) / evaluations                        AS good_rate,
        CAST(bad AS DOUBLE) / evaluations                         AS bad_rate,
        CASE WHEN previous_evaluations > 0
             THEN CAST(previous_good AS DOUBLE) / previous_evaluations END AS previous_good_rate,
        CASE WHEN previous_evaluations > 0
             THEN CAST(previous_bad AS DOUBLE) / previous_evaluations END  AS previous_bad_rate,
        evaluations >= {{min_evaluations}}                        AS ranked,
        previous_evaluations >= {{min_evaluations}}               AS previously_ranked
    FROM counts
    WHERE evaluations > 0
),
ranks AS (
    SELECT
        *,
        RANK() OVER (PARTITION BY entity_type, ranked ORDER BY good_rate DESC)          AS good_rank_all,
        RANK() OVER (PARTITION BY entity_type, ranked ORDER BY bad_rate DESC)           AS bad_rank_all,
        RANK() OVER (PARTITION BY entity_type, previously_ranked
                     ORDER BY previous_good_rate DESC)                                  AS previous_good_rank_all,
        RANK() OVER (PARTITION BY entity_type, previously_ranked
                     ORDER BY previous_bad_rate DESC)                                   AS previous_bad_rank_all,
        sum(CASE WHEN ranked THEN 1 ELSE 0 END) OVER (PARTITION BY entity_type)         AS ranked_entities
    FROM rates
)
SELECT
    '{{period_first_day}}'                                    AS period_start,
    '{{period_last_day}}'                                     AS period_end,
    CAST({{period_seq}} AS BIGINT)                            AS period_seq,
    r.entity_type,
    r.entity_id,
    COALESCE(r.entity_name, g.name)                           AS entity_name,
    CAST(r.evaluations AS BIGINT)                             AS evaluations,
    CAST(r.good AS BIGINT)                                    AS good,
    CAST(r.bad AS BIGINT)                                     AS bad,
    r.good_rate,
    r.bad_rate,
    CAST(CASE WHEN r.ranked THEN r.good_rank_all END AS BIGINT) AS good_rate_rank,
    CAST(CASE WHEN r.ranked THEN r.bad_rank_all END AS BIGINT)  AS bad_rate_rank,
    CAST(r.ranked_entities AS BIGINT)                         AS ranked_entities,
    CAST(r.previous_evaluations AS BIGINT)                    AS previous_evaluations,
    r.previous_good_rate,
    r.previous_bad_rate,
    r.good_rate - r.previous_good_rate                        AS good_rate_change,
    r.bad_rate - r.previous_bad_rate                          AS bad_rate_change,
    CAST(CASE WHEN r.previously_ranked THEN r.previous_good_rank_all END AS BIGINT) AS previous_good_rate_rank,
    CAST(CASE WHEN r.previously_ranked THEN r.previous_bad_rank_all END AS BIGINT)  AS previous_bad_rate_rank
FROM ranks r
LEFT JOIN regions g ON g.level = r.entity_type AND g.code = r.entity_id
ORDER BY r.entity_type, good_rate_rank NULLS LAST, r.entity_id
