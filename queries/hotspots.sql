-- hotspots: where bad reviews concentrate (差评集中, 001 §22, 003 二(四)3) over one event-time window
-- ending at {{as_of}}, by service item, department, staff member, region at each level and tag.
--
-- For each entity: evaluations and bad reviews in the window [{{window_start}}, {{as_of}}), against
-- the entity's own trailing 28 days before the window, [{{baseline_start}}, {{window_start}}).
-- A hotspot needs
--   * at least {{min_bad_reviews}} bad reviews in the window (so one review is never a hotspot), and
--   * a window bad rate at least {{min_lift}} times the baseline bad rate, and above it (an entity
--     without bad reviews in its baseline qualifies on the first condition alone; lift is then NULL).
-- For a tag the rate is the share of all evaluations in the window that carry it.
-- The ids are stable: entity type, entity id, window and rule, so two refreshes can be compared to
-- tell which hotspots opened and which closed. Rows: effective_evaluations.
WITH reviews AS (
    SELECT
        dept_code, dept_name, province_code, city_code, county_code, township_code,
        staff_id, task_code, task_name, tags, text, bad_review, assessed_at,
        assessed_at >= {{window_start}} AS in_window
    FROM effective_evaluations
    WHERE dt >= '{{first_day}}' AND dt <= '{{last_day}}'
      AND assessed_at >= {{baseline_start}} AND assessed_at < {{as_of}}
),
entity_rows AS (
    SELECT
        t.entity_type,
        CASE t.entity_type
            WHEN 'item'       THEN r.task_code
            WHEN 'department' THEN r.dept_code
            WHEN 'staff'      THEN r.dept_code || '/' || r.staff_id
            WHEN 'province'   THEN r.province_code
            WHEN 'city'       THEN r.city_code
            WHEN 'county'     THEN r.county_code
            WHEN 'township'   THEN r.township_code
        END AS entity_id,
        CASE t.entity_type
            WHEN 'item'       THEN r.task_name
            WHEN 'department' THEN r.dept_name
        END AS entity_name,
        r.bad_review AS bad, r.in_window, r.tags, r.text, r.assessed_at
    FROM reviews r
    CROSS JOIN (VALUES ('item'), ('department'), ('staff'), ('province'), ('city'), ('county'),
                       ('township')) AS t(entity_type)
),
tag_rows AS (
    SELECT 'tag' AS entity_type, tag AS entity_id, CAST(NULL AS VARCHAR) AS entity_name,
           TRUE AS bad, in_window, tags, text, assessed_at
    FROM (SELECT unnest(tags) AS tag, tags, text, in_window, assessed_at
          FROM reviews WHERE bad_review) u
),
totals AS (
    SELECT sum(CASE WHEN in_window THEN 1 ELSE 0 END)     AS window_evaluations,
           sum(CASE WHEN NOT in_window THEN 1 ELSE 0 END) AS baseline_evaluations
    FROM reviews
),
entity_counts AS (
    SELECT
        entity_type, entity_id, max(entity_name) AS entity_name,
        sum(CASE WHEN in_window THEN 1 ELSE 0 END)                 AS evaluations,
        sum(CASE WHEN in_window AND bad THEN 1 ELSE 0 END)         AS bad_reviews,
        sum(CASE WHEN NOT in_window THEN 1 ELSE 0 END)             AS baseline_evaluations,
        sum(CASE WHEN NOT in_window AND bad THEN 1 ELSE 0 END)     AS baseline_bad_reviews,
        array_agg(CASE WHEN in_window AND bad THEN tags END
                  ORDER BY assessed_at, text)                      AS window_tags,
        array_agg(CASE WHEN in_window AND bad THEN text END
                  ORDER BY assessed_at, text)                      AS window_texts
    FROM entity_rows
    WHERE entity_id IS NOT NULL
    GROUP BY entity_type, entity_id
),
tag_counts AS (
    SELECT
        c.entity_type, c.entity_id, c.entity_name,
        t.window_evaluations                                       AS evaluations,
        sum(CASE WHEN c.in_window THEN 1 ELSE 0 END)               AS bad_reviews,
        t.baseline_evaluations                                     AS baseline_evaluations,
        sum(CASE WHEN NOT c.in_window THEN 1 ELSE 0 END)           AS baseline_bad_reviews,
        array_agg(CASE WHEN c.in_window THEN c.tags END
                  ORDER BY c.assessed_at, c.text)                  AS window_tags,
        array_agg(CASE WHEN c.in_window THEN c.text END
                  ORDER BY c.assessed_at, c.text)                  AS window_texts
    FROM tag_rows c CROSS JOIN totals t
    GROUP BY c.entity_type, c.entity_id, c.entity_name, t.window_evaluations, t.baseline_evaluations
),
candidates AS (
    SELECT *,
        CAST(bad_reviews AS DOUBLE) / evaluations AS bad_rate,
        CASE WHEN baseline_evaluations > 0
             THEN CAST(baseline_bad_reviews AS DOUBLE) / baseline_evaluations
             ELSE 0.0 END AS baseline_bad_rate
    FROM (SELECT * FROM entity_counts UNION ALL SELECT * FROM tag_counts) u
    WHERE evaluations > 0 AND bad_reviews >= {{min_bad_reviews}}
)
SELECT
    c.entity_type || ':' || c.entity_id || ':{{window}}:bad_review_concentration' AS hotspot_id,
    'bad_review_concentration'                            AS rule,
    c.entity_type,
    c.entity_id,
    COALESCE(c.entity_name, g.name)                       AS entity_name,
    '{{window}}'                                          AS window,
    {{window_start}}                                      AS window_start,
    {{as_of}}                                             AS window_end,
    CAST(c.evaluations AS BIGINT)                         AS evaluations,
    CAST(c.bad_reviews AS BIGINT)                         AS bad_reviews,
    c.bad_rate,
    CAST(c.baseline_evaluations AS BIGINT)                AS baseline_evaluations,
    CAST(c.baseline_bad_reviews AS BIGINT)                AS baseline_bad_reviews,
    c.baseline_bad_rate,
    CASE WHEN c.baseline_bad_rate > 0 THEN c.bad_rate / c.baseline_bad_rate END AS lift,
    c.window_tags,
    c.window_texts
FROM candidates c
LEFT JOIN regions g ON g.level = c.entity_type AND g.code = c.entity_id
WHERE c.bad_rate > c.baseline_bad_rate
  AND c.bad_rate >= {{min_lift}} * c.baseline_bad_rate
ORDER BY bad_reviews DESC, entity_type, entity_id
