-- hotspots: where bad reviews concentrate (差评集中, 001 §22, 003 二(四)3) over one event-time window
-- ending at {{as_of}}, by service item, department, staff member, region at each level and tag.
--
-- For each entity: evaluations and bad reviews in the window [{{window_start}}, {{as_of}}), against a
-- baseline, named in the `baseline` column:
--   * own_28d: the entity's own trailing 28 days before the window, [{{baseline_start}}, {{window_start}});
--   * peers_28d: an entity with no evaluation in those 28 days (a new staff member, a new item) is
--     compared with its peers', i.e. every entity of its type, over the same 28 days;
--   * peers_window: a lake with no history at all (its first day) compares each entity with its
--     peers in the window itself, so a province's first day still shows where bad reviews gather.
-- baseline_evaluations, baseline_bad_reviews and baseline_bad_rate describe the baseline used. A
-- peers' rate is Σ bad / Σ evaluations over the type (for tags: the mean share of a tag).
-- A hotspot needs
--   * at least {{min_bad_reviews}} bad reviews in the window (so one review is never a hotspot), and
--   * a window bad rate at least {{min_lift}} times the baseline bad rate, and above it (an entity
--     whose own baseline has no bad review qualifies on the first condition alone; lift is then NULL).
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
        sum(CASE WHEN NOT in_window AND bad THEN 1 ELSE 0 END)     AS baseline_bad_reviews
    FROM entity_rows
    WHERE entity_id IS NOT NULL
    GROUP BY entity_type, entity_id
),
-- The window's bad reviews of each entity, in time order, for the "why" (top tags and terms):
-- aggregated apart over those few rows, since an ordered array_agg costs per row it sees.
entity_lists AS (
    SELECT entity_type, entity_id,
        array_agg(tags ORDER BY assessed_at, text)                 AS window_tags,
        array_agg(text ORDER BY assessed_at, text)                 AS window_texts
    FROM entity_rows
    WHERE entity_id IS NOT NULL AND in_window AND bad
    GROUP BY entity_type, entity_id
),
tag_counts AS (
    SELECT
        c.entity_type, c.entity_id, c.entity_name,
        t.window_evaluations                                       AS evaluations,
        sum(CASE WHEN c.in_window THEN 1 ELSE 0 END)               AS bad_reviews,
        t.baseline_evaluations                                     AS baseline_evaluations,
        sum(CASE WHEN NOT c.in_window THEN 1 ELSE 0 END)           AS baseline_bad_reviews,
        array_agg(c.tags ORDER BY c.assessed_at, c.text)
            FILTER (WHERE c.in_window)                             AS window_tags,
        array_agg(c.text ORDER BY c.assessed_at, c.text)
            FILTER (WHERE c.in_window)                             AS window_texts
    FROM tag_rows c CROSS JOIN totals t
    GROUP BY c.entity_type, c.entity_id, c.entity_name, t.window_evaluations, t.baseline_evaluations
),
all_counts AS (
    SELECT c.*, l.window_tags, l.window_texts
    FROM entity_counts c
    LEFT JOIN entity_lists l ON l.entity_type = c.entity_type AND l.entity_id = c.entity_id
    UNION ALL
    SELECT * FROM tag_counts
),
peers AS (
    SELECT entity_type,
           sum(evaluations)          AS peer_evaluations,
           sum(bad_reviews)          AS peer_bad_reviews,
           sum(baseline_evaluations) AS peer_baseline_evaluations,
           sum(baseline_bad_reviews) AS peer_baseline_bad_reviews
    FROM all_counts
    GROUP BY entity_type
),
referenced AS (
    SELECT a.*,
        CASE WHEN a.baseline_evaluations > 0 THEN 'own_28d'
             WHEN p.peer_baseline_evaluations > 0 THEN 'peers_28d'
             ELSE 'peers_window' END AS baseline,
        CASE WHEN a.baseline_evaluations > 0 THEN a.baseline_evaluations
             WHEN p.peer_baseline_evaluations > 0 THEN p.peer_baseline_evaluations
             ELSE p.peer_evaluations END AS reference_evaluations,
        CASE WHEN a.baseline_evaluations > 0 THEN a.baseline_bad_reviews
             WHEN p.peer_baseline_evaluations > 0 THEN p.peer_baseline_bad_reviews
             ELSE p.peer_bad_reviews END AS reference_bad_reviews
    FROM all_counts a JOIN peers p ON p.entity_type = a.entity_type
),
candidates AS (
    SELECT *,
        CAST(bad_reviews AS DOUBLE) / evaluations AS bad_rate,
        CAST(reference_bad_reviews AS DOUBLE) / reference_evaluations AS baseline_bad_rate
    FROM referenced
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
    c.baseline,
    CAST(c.reference_evaluations AS BIGINT)               AS baseline_evaluations,
    CAST(c.reference_bad_reviews AS BIGINT)               AS baseline_bad_reviews,
    c.baseline_bad_rate,
    CASE WHEN c.baseline_bad_rate > 0 THEN c.bad_rate / c.baseline_bad_rate END AS lift,
    c.window_tags,
    c.window_texts
FROM candidates c
LEFT JOIN regions g ON g.level = c.entity_type AND g.code = c.entity_id
WHERE c.bad_rate > c.baseline_bad_rate
  AND c.bad_rate >= {{min_lift}} * c.baseline_bad_rate
ORDER BY bad_reviews DESC, entity_type, entity_id
