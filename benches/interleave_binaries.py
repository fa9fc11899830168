#!/usr/bin/env python3
"""Several engine binaries through the same broker topic, interleaved: wall, CPU, peak RSS and commits.

    python3 benches/interleave_binaries.py 1000000 5 /tmp/haochaping-a /tmp/haochaping-b ...

Starts Tansu (as compare_broker.py), produces N generated events into a 4-partition topic once, then
runs ROUNDS rounds of every binary in turn: `haochaping ingest --exit-when-idle 100ms` with alerts off,
from a fresh group into an empty lake, wall time from process start to exit, CPU and peak RSS from
rusage. On this shared machine one run drifts by ±10 %, so each binary's runs are spread over the
same minutes. Prints each run, then each binary's medians.
"""
import json
import os
import shutil
import statistics
import sys

N, ROUNDS, BINARIES = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
sys.argv = sys.argv[:1]  # compare_broker reads its own arguments at import

from compare_broker import TOPIC, produce, start_tansu  # noqa: E402
from timing import run_cpu  # noqa: E402

LAKE = os.path.join(os.environ.get("WORK", "/tmp/haochaping-bench"), "lake-binaries")


def main():
    tansu, brokers = start_tansu()
    try:
        produce(BINARIES[-1], brokers, N)
        runs = {binary: [] for binary in BINARIES}
        for round_ in range(ROUNDS):
            for i, binary in enumerate(BINARIES):
                shutil.rmtree(LAKE, ignore_errors=True)
                env = dict(os.environ, HAOCHAPING_ALERTS_ENABLED="false",
                           HAOCHAPING_IDENTITY_SECRET="bench-secret-0123456789", HAOCHAPING_LOG="warn")
                wall, rss, out, cpu = run_cpu([binary, "ingest", "--brokers", brokers, "--topic", TOPIC,
                                               "--lake", LAKE, "--group", f"binaries-{round_}-{i}",
                                               "--exit-when-idle", "100ms"], env)
                summary = json.loads(out)
                assert summary["received"] == N, f"{binary} read {summary['received']} of {N} events"
                runs[binary].append((wall, cpu, rss))
                print(f"round {round_ + 1:2}  {binary}  {wall:6.2f} s  CPU {cpu:6.2f} s  peak RSS {rss / 1024:4.0f} MiB"
                      f"  commits {summary['batches_committed']}  files {summary['files_written']}", flush=True)
        for binary, v in runs.items():
            walls = [w for w, _, _ in v]
            rss = [r / 1024 for _, _, r in v]
            print(f"{binary}  wall median {statistics.median(walls):.2f} s ({min(walls):.2f}-{max(walls):.2f})  "
                  f"CPU median {statistics.median(c for _, c, _ in v):.2f} s  "
                  f"peak RSS {min(rss):.0f}-{max(rss):.0f} MiB")
    finally:
        tansu.kill()
        tansu.wait()


if __name__ == "__main__":
    main()
