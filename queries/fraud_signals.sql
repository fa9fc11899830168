-- fraud_signals: suspected fake good reviews (刷好评) and malicious bad reviewers (恶意差评)
-- (003 二(五)) in one month [{{period_start}}, {{period_end}}). Signals are evidence for a person to
-- look at, not verdicts; a review found malicious goes to `exclusions` by the review procedure.
--
-- * good_burst_few_keys: a department received at least {{burst_min_reviews}} top-level (5, 非常满意)
--   reviews within one {{burst_minutes}}-minute slot from at most {{burst_max_keys}} evaluator keys.
-- * good_burst_one_window: one window (department + staff number, window-device channel) received at
--   least {{burst_min_reviews}} top-level reviews within one {{burst_minutes}}-minute slot.
-- * bad_reviews_across_departments: one evaluator key gave at least {{bad_min_reviews}} bad reviews to
--   at least {{bad_min_departments}} departments within the month.
-- Slots are fixed (aligned to the hour), so a burst across a slot boundary counts in two halves.
-- Evaluator keys are the lake's keyed hashes (never clear-text identity); anonymous reviews carry
-- none and count only towards good_burst_one_window. Rows: `evaluations` as received (exclusions
-- are the outcome of these signals, so they are not removed here).
WITH top AS (
    SELECT dept_code, dept_name, staff_id, channel, evaluator_key, assessed_at,
           date_bin(INTERVAL '{{burst_minutes}} minutes', assessed_at,
                    CAST('2000-01-01T00:00:00Z' AS TIMESTAMP)) AS slot
    FROM evaluations
    WHERE dt >= '{{period_start}}' AND dt < '{{period_end}}' AND satisfaction = 5
),
-- Each group's reviews counted per evaluator key first, then per group: a distinct count per group
-- keeps a hash set for every department's every slot (gigabytes over a province's month), while
-- these are plain sums. The keys' lists are gathered only for the groups that raised a signal.
dept_slot_keys AS (
    SELECT dept_code, slot, evaluator_key, count(*) AS n, max(dept_name) AS dept_name,
           min(assessed_at) AS first_at, max(assessed_at) AS last_at
    FROM top
    WHERE evaluator_key IS NOT NULL
    GROUP BY dept_code, slot, evaluator_key
),
few_keys_groups AS (
    SELECT dept_code, slot, max(dept_name) AS entity_name,
           min(first_at) AS first_at, max(last_at) AS last_at,
           sum(n) AS reviews, count(*) AS evaluator_keys_count
    FROM dept_slot_keys
    GROUP BY dept_code, slot
    HAVING sum(n) >= {{burst_min_reviews}} AND count(*) <= {{burst_max_keys}}
),
few_keys AS (
    SELECT
        'good_burst_few_keys' AS signal, 'department' AS entity_type, g.dept_code AS entity_id,
        g.entity_name, g.slot, g.first_at, g.last_at, g.reviews, g.evaluator_keys_count,
        CAST(1 AS BIGINT) AS departments,
        array_agg(k.evaluator_key ORDER BY k.evaluator_key) AS evaluator_keys
    FROM few_keys_groups g
    JOIN dept_slot_keys k ON k.dept_code = g.dept_code AND k.slot = g.slot
    GROUP BY g.dept_code, g.entity_name, g.slot, g.first_at, g.last_at, g.reviews,
             g.evaluator_keys_count
),
-- The same for one window; anonymous reviews count towards the reviews, not the keys.
window_slot_keys AS (
    SELECT dept_code, staff_id, slot, evaluator_key, count(*) AS n, max(dept_name) AS dept_name,
           min(assessed_at) AS first_at, max(assessed_at) AS last_at
    FROM top
    WHERE channel = 'hall_window' AND staff_id IS NOT NULL
    GROUP BY dept_code, staff_id, slot, evaluator_key
),
one_window_groups AS (
    SELECT dept_code, staff_id, slot, max(dept_name) AS entity_name,
           min(first_at) AS first_at, max(last_at) AS last_at,
           sum(n) AS reviews, count(evaluator_key) AS evaluator_keys_count
    FROM window_slot_keys
    GROUP BY dept_code, staff_id, slot
    HAVING sum(n) >= {{burst_min_reviews}}
),
one_window AS (
    SELECT
        'good_burst_one_window' AS signal, 'staff' AS entity_type,
        g.dept_code || '/' || g.staff_id AS entity_id, g.entity_name, g.slot,
        g.first_at, g.last_at, g.reviews, g.evaluator_keys_count,
        CAST(1 AS BIGINT) AS departments,
        array_agg(k.evaluator_key ORDER BY k.evaluator_key) AS evaluator_keys
    FROM one_window_groups g
    JOIN window_slot_keys k
      ON k.dept_code = g.dept_code AND k.staff_id = g.staff_id AND k.slot = g.slot
    GROUP BY g.dept_code, g.staff_id, g.entity_name, g.slot, g.first_at, g.last_at, g.reviews,
             g.evaluator_keys_count
),
-- Keys with enough bad reviews, counted first: the distinct counts and lists below cost per group,
-- and almost every key has one review in a month.
frequent_bad_reviewers AS (
    SELECT evaluator_key
    FROM evaluations
    WHERE dt >= '{{period_start}}' AND dt < '{{period_end}}' AND bad_review
      AND evaluator_key IS NOT NULL
    GROUP BY evaluator_key
    HAVING count(*) >= {{bad_min_reviews}}
),
bad_reviewers AS (
    SELECT
        'bad_reviews_across_departments' AS signal, 'evaluator' AS entity_type,
        evaluator_key AS entity_id, CAST(NULL AS VARCHAR) AS entity_name,
        min(assessed_at) AS slot,
        min(assessed_at) AS first_at, max(assessed_at) AS last_at,
        count(*) AS reviews, CAST(1 AS BIGINT) AS evaluator_keys_count,
        count(DISTINCT dept_code) AS departments,
        array_agg(DISTINCT evaluator_key ORDER BY evaluator_key) AS evaluator_keys
    FROM evaluations
    WHERE dt >= '{{period_start}}' AND dt < '{{period_end}}' AND bad_review
      AND evaluator_key IN (SELECT evaluator_key FROM frequent_bad_reviewers)
    GROUP BY evaluator_key
    HAVING count(*) >= {{bad_min_reviews}} AND count(DISTINCT dept_code) >= {{bad_min_departments}}
),
signals AS (
    SELECT * FROM few_keys
    UNION ALL SELECT * FROM one_window
    UNION ALL SELECT * FROM bad_reviewers
)
SELECT
    signal || ':' || entity_id || ':' || CAST(slot AS VARCHAR) AS signal_id,
    signal,
    entity_type,
    entity_id,
    entity_name,
    first_at,
    last_at,
    CAST(date_part('epoch', last_at) - date_part('epoch', first_at) AS BIGINT) AS span_seconds,
    CAST(reviews AS BIGINT)                   AS reviews,
    CAST(evaluator_keys_count AS BIGINT)      AS distinct_evaluator_keys,
    CAST(departments AS BIGINT)               AS departments,
    evaluator_keys
FROM signals
ORDER BY signal, first_at, entity_id
