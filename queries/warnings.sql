-- warnings: entities ranked at the bottom repeatedly (连续排名靠后, 001 §24, 002 §16, 003 制度 §15).
--
-- "At the bottom" in a period = bad_rate_rank <= {{bottom_n}} in the rankings table (bad_rate_rank 1
-- is the highest bad rate; ties share a rank, so a tie at the boundary is inside). "In a row" =
-- consecutive periods of the same type (months, half-years or years; rolling windows are not
-- consecutive periods and give no warnings): a period where the entity was not ranked (no data, or
-- fewer evaluations than the ranking minimum) ends the run. One row per run of at least
-- {{periods_in_row}} periods; warning_id is stable (type, entity, first period of the run). A period
-- where no more than N entities of the type were ranked does not count: everyone is "at the
-- bottom" there (a province ranked alone, say).
WITH bottom AS (
    SELECT period_type, period, period_seq, entity_type, entity_id, entity_name,
           bad_rate_rank, good_rate, ranked_entities
    FROM rankings
    WHERE period_type IN ('month', 'half_year', 'year')
      AND bad_rate_rank <= {{bottom_n}}
      AND ranked_entities > {{bottom_n}}
),
runs AS (
    SELECT
        *,
        period_seq - row_number() OVER (
            PARTITION BY period_type, entity_type, entity_id ORDER BY period_seq) AS run
    FROM bottom
)
SELECT
    period_type || ':' || entity_type || ':' || entity_id || ':' || min(period) AS warning_id,
    period_type,
    entity_type,
    entity_id,
    max(entity_name)                                   AS entity_name,
    min(period)                                        AS first_period,
    max(period)                                        AS last_period,
    count(*)                                           AS periods_in_row,
    CAST({{bottom_n}} AS BIGINT)                       AS bottom_n,
    array_agg(bad_rate_rank ORDER BY period_seq)       AS bad_rate_ranks,
    array_agg(ranked_entities ORDER BY period_seq)     AS ranked_entities,
    array_agg(good_rate ORDER BY period_seq)           AS good_rates
FROM runs
GROUP BY period_type, entity_type, entity_id, run
HAVING count(*) >= {{periods_in_row}}
ORDER BY period_type, entity_type, last_period DESC, periods_in_row DESC, entity_id
