#!/usr/bin/env python3
"""The ranking SQL (queries/rankings.sql over queries/effective_evaluations.sql) on the same Parquet
files, DataFusion (haochaping query) vs DuckDB, side by side.

    cargo build --release && python3 benches/compare_rankings.py 10000000

The size comes from the first argument, else HAOCHAPING_BENCH_EVENTS, else 10 M (CI's smoke run
uses HAOCHAPING_BENCH_EVENTS=2000). The events are generated over ten days (2026-09-26 to
2026-10-05, a tenth each) and ingested with `haochaping ingest --from-file` into one lake (kept in
$WORK between runs of the same size). Then the October ranking (period 2026-10, previous period
2026-09, so all ten days are read) is run RUNS times by each engine:

* DataFusion: `haochaping query --format parquet --output /dev/null "<rankings SQL>"`, a child process
  (registering the lake, the regions table and the view, planning, running, writing Parquet);
* DuckDB: a child process that reads the same files (`read_parquet(..., hive_partitioning)`), creates
  the same `exclusions`, `regions` and `effective_evaluations`, runs the same SQL text and fetches
  every row as Arrow.

Both results are compared row by row (counts and ranks) before any time is printed. Figures: wall
time of each child, best and median of RUNS, and the ratio.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys

from timing import BIN, run

N = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("HAOCHAPING_BENCH_EVENTS", 10_000_000))
RUNS = int(os.environ.get("RUNS", 3))
WORK = os.environ.get("WORK", "/tmp/haochaping-bench")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAYS = ["2026-09-26", "2026-09-27", "2026-09-28", "2026-09-29", "2026-09-30",
        "2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04", "2026-10-05"]
PARAMS = {
    "period_start": "2026-10-01",
    "period_end": "2026-11-01",
    "previous_start": "2026-09-01",
    "period_first_day": "2026-10-01",
    "period_last_day": "2026-10-31",
    "period_seq": str(2026 * 12 + 9),
    "min_evaluations": "10",
}


def render(template):
    for name, value in PARAMS.items():
        template = template.replace("{{" + name + "}}", value)
    if "{{" in template:
        sys.exit("unfilled template parameter")
    return template


def sql_file(name):
    with open(os.path.join(ROOT, "queries", name), encoding="utf-8") as f:
        return f.read()


DUCKDB_RUNNER = r"""
import sys, time, duckdb
lake, regions_csv, view_sql, ranking_sql, out = sys.argv[1:6]
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute(f"CREATE VIEW evaluations AS SELECT * FROM read_parquet('{lake}/evaluations/*/*/*.parquet', hive_partitioning = true, hive_types_autocast = false)")
con.execute("CREATE TABLE exclusions (project_no VARCHAR, assess_number TINYINT, reason VARCHAR, decided_at TIMESTAMPTZ)")
con.execute(f'''CREATE TABLE regions AS
    SELECT level,
           CASE level WHEN 'township' THEN substr(code, 1, 9) ELSE substr(code, 1, 6) END AS code,
           name
    FROM read_csv('{regions_csv}', header = true, all_varchar = true)
    WHERE level IN ('province', 'city', 'county', 'township')''')
con.execute("CREATE VIEW effective_evaluations AS " + view_sql)
start = time.perf_counter()
result = con.execute(ranking_sql)
table = result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table()
sys.stderr.write("duckdb_query_seconds=%f\n" % (time.perf_counter() - start))
import pyarrow.parquet as pq
pq.write_table(table, out)
"""


def rows(path):
    import pyarrow.parquet as pq
    t = pq.read_table(path).to_pylist()
    key = ("entity_type", "entity_id", "evaluations", "good", "bad", "good_rate_rank", "bad_rate_rank",
           "previous_evaluations", "previous_good_rate_rank")
    return sorted(tuple(r[k] for k in key) for r in t)


def main():
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "duckdb", "pyarrow"], check=True)
    os.makedirs(WORK, exist_ok=True)
    lake = os.path.join(WORK, f"lake-rankings-{N}")
    env = dict(os.environ, HAOCHAPING_IDENTITY_SECRET="bench-secret-0123456789", HAOCHAPING_LOG="warn")
    if not os.path.exists(os.path.join(lake, "_haochaping", "bench-complete")):
        shutil.rmtree(lake, ignore_errors=True)
        gen_s = ingest_s = 0.0
        for i, day in enumerate(DAYS):
            src = os.path.join(WORK, f"rankings-{day}.ndjson")
            count = N // len(DAYS) + (1 if i < N % len(DAYS) else 0)
            s, _, _ = run([BIN, "generate", "--to-file", src, "--events", str(count), "--day", day,
                           "--seed", str(100 + i), "--bad-rate", "0"])
            gen_s += s
            s, _, _ = run([BIN, "ingest", "--from-file", src, "--lake", lake], env=env)
            ingest_s += s
            os.remove(src)
        open(os.path.join(lake, "_haochaping", "bench-complete"), "w").close()
        print(f"lake: {N} events over {len(DAYS)} days: generated in {gen_s:.1f} s, ingested in {ingest_s:.1f} s")
    count = subprocess.run([BIN, "query", "--lake", lake, "--format", "csv", "SELECT count(*) AS n FROM evaluations"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()[1]
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(lake, "evaluations")) for f in fs)
    print(f"input: {count} rows in the lake, {size / 1e6:.1f} MB of Parquet ({lake})")

    ranking_sql = render(sql_file("rankings.sql"))
    view_sql = sql_file("effective_evaluations.sql")
    regions_csv = os.path.join(ROOT, "schemas", "regions", "regions-2023.csv")
    df_out = os.path.join(WORK, "rankings-datafusion.parquet")
    duck_out = os.path.join(WORK, "rankings-duckdb.parquet")
    df_times, duck_times = [], []
    df_rss = duck_rss = 0
    for _ in range(RUNS):
        s, rss, _ = run([BIN, "query", "--lake", lake, "--format", "parquet", "--output", df_out, "--", ranking_sql], env=env)
        df_times.append(s)
        df_rss = max(df_rss, rss)
        s, rss, _ = run([sys.executable, "-c", DUCKDB_RUNNER, lake, regions_csv, view_sql, ranking_sql, duck_out])
        duck_times.append(s)
        duck_rss = max(duck_rss, rss)
    a, b = rows(df_out), rows(duck_out)
    if a != b:
        diff = [r for r in a if r not in set(b)][:5]
        sys.exit(f"the engines disagree: {len(a)} vs {len(b)} rows; first differences {diff}")
    print(f"both engines: the same {len(a)} ranking rows")
    for name, times, rss in (("datafusion", df_times, df_rss), ("duckdb", duck_times, duck_rss)):
        print(f"{name:10} best {min(times):7.2f} s  median {statistics.median(times):7.2f} s  "
              f"peak RSS {rss / 1024:.0f} MiB  runs {json.dumps([round(t, 2) for t in times])}")
    print(f"ratio: DataFusion takes {min(df_times) / min(duck_times):.2f}x DuckDB's time (best of {RUNS})")


if __name__ == "__main__":
    main()
