-- Where bad reviews concentrate (差评集中的事项, DOMAIN.md §4): service items with at least two bad
-- reviews, their department and county, and the tags people chose most.
WITH bad AS (
    SELECT task_code, task_name, dept_code, dept_name, county_code, tags
    FROM evaluations
    WHERE bad_review
),
items AS (
    SELECT task_code, task_name, dept_code, dept_name, county_code, count(*) AS bad_reviews
    FROM bad
    GROUP BY task_code, task_name, dept_code, dept_name, county_code
    HAVING count(*) >= 2
),
tags AS (
    SELECT task_code, tag, count(*) AS times
    FROM (SELECT task_code, unnest(tags) AS tag FROM bad)
    GROUP BY task_code, tag
)
SELECT
    i.county_code,
    i.dept_name,
    i.task_name,
    i.bad_reviews,
    (SELECT t.tag FROM tags t WHERE t.task_code = i.task_code ORDER BY t.times DESC, t.tag LIMIT 1) AS top_tag
FROM items i
ORDER BY i.bad_reviews DESC, i.task_code
LIMIT 20;
