#!/usr/bin/env python3
"""Side by side on the same NDJSON file: haochaping's offline path vs DuckDB writing the same
Hive-partitioned zstd Parquet.

    cargo build --release && python3 benches/compare_duckdb.py 1000000 [DAYS]

DAYS (default 1) spreads the evaluations over that many days (from 2026-11-01): 20 days make twenty
times as many `dt × city` folders, the fan-out a replay of a month meets.

Generates the file once (haochaping generate --to-file), then times each engine end to end as a
child process (wall time, and peak RSS from the kernel's rusage of the child). DuckDB does less:
no validation of codes, credit codes or region hierarchy, no dedup, no dead letters; its identity
column is a plain SHA-256, not a keyed HMAC.
"""
import os
import shutil
import subprocess
import sys

from timing import BIN, run

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
DAYS = int(sys.argv[2]) if len(sys.argv) > 2 else 1
WORK = os.environ.get("WORK", "/tmp/haochaping-bench")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DUCKDB_SQL = """
COPY (
  SELECT
    projectNo AS project_no,
    TRY_CAST(assessNumber AS TINYINT) AS assess_number,
    TRY_CAST(satisfaction AS TINYINT) AS satisfaction,
    TRY_CAST(satisfaction AS TINYINT) <= 2 AS bad_review,
    pf AS channel,
    areaCode AS area_code,
    substr(areaCode, 1, 2) || '0000' AS province_code,
    substr(areaCode, 1, 4) || '00' AS city_code,
    substr(areaCode, 1, 6) AS county_code,
    substr(areaCode, 1, 9) AS township_code,
    deptCode AS dept_code, deptName AS dept_name, taskCode AS task_code, taskName AS task_name,
    staffId AS staff_id, staffName AS staff_name,
    string_split(evalDetail, ',') AS tags,
    writingEvaluation AS text,
    TRY_STRPTIME(assessTime, '%Y-%m-%d %H:%M:%S') - INTERVAL 8 HOUR AS assessed_at,
    userProp AS evaluator_kind,
    sha256(coalesce(userCert, userPhone, userName, '')) AS evaluator_key,
    anonymityFlag = '1' AS anonymous,
    substr(assessTime, 1, 10) AS dt,
    substr(areaCode, 1, 4) || '00' AS city
  FROM read_json('{src}', format = 'newline_delimited', ignore_errors = true, columns = {{
    projectNo: 'VARCHAR', taskCode: 'VARCHAR', taskName: 'VARCHAR', deptCode: 'VARCHAR', deptName: 'VARCHAR',
    areaCode: 'VARCHAR', pf: 'VARCHAR', satisfaction: 'VARCHAR', evalDetail: 'VARCHAR',
    writingEvaluation: 'VARCHAR', assessTime: 'VARCHAR', assessNumber: 'VARCHAR', userProp: 'VARCHAR',
    userName: 'VARCHAR', userCert: 'VARCHAR', userPhone: 'VARCHAR', anonymityFlag: 'VARCHAR',
    staffId: 'VARCHAR', staffName: 'VARCHAR'
  }})
) TO '{dst}' (FORMAT parquet, PARTITION_BY (dt, city), COMPRESSION zstd)
"""

DUCKDB_RUNNER = """
import sys, duckdb
con = duckdb.connect()
con.execute(sys.argv[1])
"""




def main():
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "duckdb"], check=True)
    import duckdb  # noqa: F401  (installed above)

    os.makedirs(WORK, exist_ok=True)
    src = os.path.join(WORK, f"events-{N}.ndjson" if DAYS == 1 else f"events-{N}-{DAYS}days.ndjson")
    if not os.path.exists(src):
        # Each day generated with its own seed (cases never repeat across days), then their lines
        # dealt out in turn: every stretch of the file holds every day, as a backlog of late
        # evaluations would, so every batch fans out to every `dt × city` folder.
        parts = []
        for day in range(DAYS):
            part = src + f".day{day}"
            events = N // DAYS + (1 if day < N % DAYS else 0)
            subprocess.run([BIN, "generate", "--to-file", part, "--events", str(events), "--dup-rate", "0.01",
                            "--bad-rate", "0.005", "--day", f"2026-11-{day + 1:02d}", "--seed", str(day + 1)], check=True)
            parts.append(part)
        files = [open(part, "rb") for part in parts]
        with open(src + ".tmp", "wb") as out:
            while files:
                for f in list(files):
                    line = f.readline()
                    if line:
                        out.write(line)
                    else:
                        f.close()
                        files.remove(f)
        for part in parts:
            os.remove(part)
        os.rename(src + ".tmp", src)
    size = os.path.getsize(src)
    print(f"input: {N} events over {DAYS} day(s), {size / 1e6:.1f} MB NDJSON ({src})")

    # DuckDB first, so that its peak RSS is measured alone.
    duck_lake = os.path.join(WORK, "lake-duckdb")
    shutil.rmtree(duck_lake, ignore_errors=True)
    duck_s, duck_rss, _ = run([sys.executable, "-c", DUCKDB_RUNNER, DUCKDB_SQL.format(src=src, dst=duck_lake)])
    print(f"duckdb     {duck_s:7.2f} s  {N / duck_s:10.0f} events/s  {size / duck_s / 1e6:7.1f} MB/s  peak RSS {duck_rss / 1024:.0f} MiB")

    lake = os.path.join(WORK, "lake-haochaping")
    shutil.rmtree(lake, ignore_errors=True)
    env = dict(os.environ, HAOCHAPING_IDENTITY_SECRET="bench-secret-0123456789", HAOCHAPING_LOG="warn")
    ours_s, ours_rss, out = run([BIN, "ingest", "--from-file", src, "--lake", lake], env=env)
    print(f"haochaping {ours_s:7.2f} s  {N / ours_s:10.0f} events/s  {size / ours_s / 1e6:7.1f} MB/s  peak RSS {ours_rss / 1024:.0f} MiB")
    print(f"  summary: {out.strip()}")
    print(f"ratio: haochaping is {duck_s / ours_s:.2f}x DuckDB's speed")


if __name__ == "__main__":
    main()
