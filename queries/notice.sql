-- notice: the public notice (通报) of one period: every ranked department's evaluations, good and
-- bad rates (percent, two decimals) and ranks, best first, from the rankings table. Departments
-- below the ranking minimum are listed after the ranked ones, without a rank.
-- Parameters: {{period_type}}, {{period}}.
SELECT
    good_rate_rank                          AS "排名",
    entity_name                             AS "部门",
    entity_id                               AS "统一社会信用代码",
    evaluations                             AS "评价数",
    round(good_rate * 100, 2)               AS "好评率%",
    round(bad_rate * 100, 2)                AS "差评率%",
    bad_rate_rank                           AS "差评率排名",
    round(good_rate_change * 100, 2)        AS "好评率较上期(百分点)"
FROM rankings
WHERE period_type = '{{period_type}}' AND period = '{{period}}' AND entity_type = 'department'
ORDER BY good_rate_rank NULLS LAST, entity_id
