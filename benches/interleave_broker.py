#!/usr/bin/env python3
"""The alert path's cost, binary against binary, interleaved: on this shared machine a single run drifts
by ±10 %, as much as the effect, so each binary's runs are spread over the same minutes.

    python3 benches/interleave_broker.py 500000 18 /tmp/haochaping-before /tmp/haochaping-after

Starts Tansu (as compare_broker.py), produces N generated events into a 4-partition topic once, then
runs ROUNDS rounds of (before, alerts on), (after, alerts on), (after, alerts off): `haochaping ingest
--exit-when-idle 100ms` from a fresh group into an empty lake, wall time from process start to exit,
CPU and peak RSS from rusage. Prints each run, then the medians and the alert path's cost in
throughput (1 - wall off / wall on) for each binary.
"""
import json
import os
import shutil
import statistics
import sys

from compare_broker import TOPIC, produce, start_tansu
from timing import run_cpu

N = int(sys.argv[1])
ROUNDS = int(sys.argv[2])
BINARIES = {"before": sys.argv[3], "after": sys.argv[4]}
RUNS = [("before", "true"), ("after", "true"), ("after", "false")]
LAKE = os.path.join(os.environ.get("WORK", "/tmp/haochaping-bench"), "lake-interleave")


def main():
    tansu, brokers = start_tansu()
    try:
        produce(BINARIES["after"], brokers, N)
        times = {run: [] for run in RUNS}
        for round_ in range(ROUNDS):
            for binary, alerts in RUNS:
                shutil.rmtree(LAKE, ignore_errors=True)
                env = dict(os.environ, HAOCHAPING_ALERTS_ENABLED=alerts,
                           HAOCHAPING_IDENTITY_SECRET="bench-secret-0123456789", HAOCHAPING_LOG="warn")
                wall, rss, out, cpu = run_cpu([BINARIES[binary], "ingest", "--brokers", brokers, "--topic", TOPIC,
                                             "--lake", LAKE, "--group", f"interleave-{round_}-{binary}-{alerts}",
                                             "--exit-when-idle", "100ms"], env)
                received = json.loads(out)["received"]
                assert received == N, f"{binary} read {received} of {N} events"
                times[(binary, alerts)].append((wall, cpu, rss))
                print(f"round {round_ + 1:2}  {binary:6} alerts {alerts:5}  {wall:6.2f} s  CPU {cpu:6.2f} s  "
                      f"peak RSS {rss / 1024:4.0f} MiB", flush=True)
        median = {run: statistics.median(w for w, _, _ in v) for run, v in times.items()}
        for (binary, alerts), v in times.items():
            walls = [w for w, _, _ in v]
            print(f"{binary:6} alerts {alerts:5}  wall median {median[(binary, alerts)]:.2f} s "
                  f"({min(walls):.2f}-{max(walls):.2f})  CPU median {statistics.median(c for _, c, _ in v):.2f} s  "
                  f"peak RSS {max(r for _, _, r in v) / 1024:.0f} MiB")
        off = median[("after", "false")]
        for binary in BINARIES:
            print(f"alert path's cost, {binary}: {1 - off / median[(binary, 'true')]:.0%} of throughput (goal < 10%)")
    finally:
        tansu.kill()
        tansu.wait()


if __name__ == "__main__":
    main()
