-- bad_review_steps: every bad review (satisfaction 1 or 2) with when each step of its closed loop
-- happened (DOMAIN.md §3), one row per review: the input of the `bad_reviews` table, whose deadlines
-- come from the review's region policy and the working-day calendar (src/analytics/closed_loop.rs).
--
-- A step's time is its event's (`workflow.event_at`); a step not taken yet is NULL. The case's
-- later evaluation (a supplementary one after a bad first) is the evaluator's re-evaluation.
WITH steps AS (
    SELECT
        project_no,
        assess_number,
        min(CASE WHEN step = 'forwarded' THEN event_at END) AS forwarded_at,
        bool_or(CASE WHEN step = 'forwarded' THEN complex END) AS complex,
        min(CASE WHEN step = 'contacted' THEN event_at END) AS contacted_at,
        min(CASE WHEN step = 'replied' THEN event_at END) AS replied_at,
        min(CASE WHEN step = 'extended' THEN event_at END) AS extended_at,
        min(CASE WHEN step = 'rectified' THEN event_at END) AS rectified_at,
        min(CASE WHEN step = 'reported_back' THEN event_at END) AS reported_back_at,
        min(CASE WHEN step = 'revisited' THEN event_at END) AS revisited_at,
        min(CASE WHEN step = 'revisited' THEN new_satisfaction END) AS revisit_satisfaction,
        min(CASE WHEN step = 'appealed' THEN event_at END) AS appealed_at,
        min(CASE WHEN step = 'appeal_audited' THEN event_at END) AS appeal_audited_at,
        min(CASE WHEN step = 'appeal_audited' THEN decision END) AS appeal_decision,
        min(CASE WHEN step = 'review_applied' THEN event_at END) AS review_applied_at,
        min(CASE WHEN step = 'review_decided' THEN event_at END) AS review_decided_at,
        min(CASE WHEN step = 'review_decided' THEN decision END) AS review_decision
    FROM workflow
    GROUP BY project_no, assess_number
),
again AS (
    SELECT project_no, min(assessed_at) AS re_evaluated_at, min(satisfaction) AS re_satisfaction
    FROM evaluations
    WHERE assess_number = 2
    GROUP BY project_no
)
SELECT
    e.project_no,
    e.assess_number,
    e.satisfaction,
    e.area_code,
    e.province_code,
    e.city_code,
    e.county_code,
    e.dept_code,
    e.dept_name,
    e.task_code,
    e.task_name,
    e.staff_id,
    e.channel,
    e.assessed_at,
    -- A real-name review: the evaluator is known (revisited in full, 001 §19).
    (NOT e.anonymous AND e.evaluator_key IS NOT NULL) AS real_name,
    s.forwarded_at,
    s.complex,
    s.contacted_at,
    s.replied_at,
    s.extended_at,
    s.rectified_at,
    s.reported_back_at,
    s.revisited_at,
    s.revisit_satisfaction,
    s.appealed_at,
    s.appeal_audited_at,
    s.appeal_decision,
    s.review_applied_at,
    s.review_decided_at,
    s.review_decision,
    CASE WHEN e.assess_number = 1 THEN a.re_evaluated_at END AS re_evaluated_at,
    CASE WHEN e.assess_number = 1 THEN a.re_satisfaction END AS re_satisfaction,
    -- Excluded by the `exclusions` table, whoever put it there (a review decision, or an operator).
    x.reason AS excluded_as
FROM evaluations e
LEFT JOIN steps s ON s.project_no = e.project_no AND s.assess_number = e.assess_number
LEFT JOIN again a ON a.project_no = e.project_no
LEFT JOIN (
    SELECT project_no, assess_number, min(reason) AS reason FROM exclusions GROUP BY project_no, assess_number
) x ON x.project_no = e.project_no AND x.assess_number = e.assess_number
WHERE e.bad_review
ORDER BY e.project_no, e.assess_number
