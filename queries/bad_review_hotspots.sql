-- Where bad reviews concentrate (差评集中的事项, DOMAIN.md §4): service items with at least two bad
-- reviews, their department and county, and the tag people chose most for them.
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
tag_counts AS (
    SELECT task_code, tag, count(*) AS times
    FROM (SELECT task_code, unnest(tags) AS tag FROM bad)
    GROUP BY task_code, tag
),
top_tags AS (
    SELECT task_code, tag,
           row_number() OVER (PARTITION BY task_code ORDER BY times DESC, tag) AS position
    FROM tag_counts
)
SELECT
    i.county_code,
    i.dept_name,
    i.task_name,
    i.bad_reviews,
    t.tag AS top_tag
FROM items i
LEFT JOIN top_tags t ON t.task_code = i.task_code AND t.position = 1
ORDER BY i.bad_reviews DESC, i.task_code
LIMIT 20;
