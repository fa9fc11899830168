-- effective_evaluations: the evaluations that count in every rate, ranking and hotspot.
--
-- Two rules, applied in this order:
-- 1. Exclusions. A review that the review procedure (复核) found mistaken (误评) or malicious
--    (恶意差评) is listed in `exclusions` (project_no, assess_number) and drops out, retroactively
--    (002 §13, 003 制度 §9, 004 二(二)3).
-- 2. One case, one evaluation (一事一评). A case has at most a first evaluation (assess_number 1)
--    and one supplementary evaluation (assess_number 2, 追加评价). When the case has a supplementary
--    evaluation that is not excluded, the supplementary replaces the first: the case counts once,
--    at the supplementary's level, in the period of the supplementary's date (`dt`). When the
--    supplementary is excluded, the first evaluation counts again, as if there had been none.
--
-- Registered as a view by `haochaping query` and used by queries/rankings.sql and
-- queries/hotspots.sql; a filter on `dt` reaches the partition listing of `evaluations`.
WITH kept AS (
    SELECT e.*
    FROM evaluations e
    LEFT JOIN (SELECT DISTINCT project_no, assess_number FROM exclusions) x
        ON x.project_no = e.project_no AND x.assess_number = e.assess_number
    WHERE x.project_no IS NULL
),
supplemented AS (
    SELECT DISTINCT project_no FROM kept WHERE assess_number = 2
)
SELECT k.*
FROM kept k
LEFT JOIN supplemented s ON s.project_no = k.project_no AND k.assess_number = 1
WHERE s.project_no IS NULL
