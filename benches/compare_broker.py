#!/usr/bin/env python3
"""End to end through a real broker, side by side on the same topic: haochaping vs a straightforward
Python consumer (benches/python_consumer.py: confluent-kafka + pyarrow) vs the bare consume rate of
librdkafka (benches/broker.rs, criterion).

    cargo build --release && python3 benches/compare_broker.py 1000000

Starts Tansu (HAOCHAPING_TANSU_BIN, or the .ci/run cache) on a free port, produces N generated events
into a 4-partition topic once, then reads the whole topic with each consumer from a fresh consumer
group. Python and haochaping run as child processes: wall time from process start to exit (group
join and end detection included), peak RSS and CPU from the child's rusage, and the broker's CPU
during each run from /proc. The bare rate and criterion's
engine rate come from `cargo bench --bench broker` on the same topic.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time

from timing import BIN, CACHE, TARGET, run_cpu

N = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
WORK = os.environ.get("WORK", "/tmp/haochaping-bench")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TANSU = os.environ.get("HAOCHAPING_TANSU_BIN", os.path.join(CACHE, "tansu", "bin", "tansu"))
TOPIC = "evaluations"



def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_tansu():
    """A Tansu broker in memory on a free port, listening: (its process, its bootstrap address)."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    tansu = subprocess.Popen([TANSU, "broker", "--storage-engine", "memory://tansu/", "--listener-url", url,
                              "--advertised-listener-url", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(port)
    return tansu, f"127.0.0.1:{port}"


def produce(binary, brokers, events):
    """The bench's generated day (1 % redeliveries, 0.5 % bad records) into a 4-partition topic. The
    day is generate's default, yesterday: a fixed date would fall out of the dedup window one day,
    and every event would then be dead-lettered as outside it."""
    subprocess.run([binary, "generate", "--brokers", brokers, "--topic", TOPIC, "--events", str(events), "--dup-rate",
                    "0.01", "--bad-rate", "0.005", "--partitions", "4"], check=True,
                   stdout=subprocess.DEVNULL)


def wait_for(port):
    """Until something listens on the port (the broker started), for at most 30 s."""
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            time.sleep(0.1)


def cpu_seconds(pid):
    """User + system CPU a running process has used so far (from /proc: ticks of 1/100 s)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd, tansu, env=None):
    """run_cpu, and the broker's CPU seconds during the run: on two cores they share the machine."""
    before = cpu_seconds(tansu.pid)
    elapsed, rss, out, cpu = run_cpu(cmd, env)
    return elapsed, rss, out, cpu, cpu_seconds(tansu.pid) - before


def criterion_rate(name):
    path = os.path.join(TARGET, "criterion", "broker", name, "new", "estimates.json")
    with open(path) as f:
        seconds = json.load(f)["mean"]["point_estimate"] / 1e9
    return seconds


def main():
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "confluent-kafka", "pyarrow"], check=True)
    os.makedirs(WORK, exist_ok=True)
    tansu, brokers = start_tansu()
    try:
        start = time.perf_counter()
        produce(BIN, brokers, N)
        print(f"produced {N} events into {TOPIC} (4 partitions) on Tansu in {time.perf_counter() - start:.1f} s")

        py_lake = os.path.join(WORK, "lake-python")
        shutil.rmtree(py_lake, ignore_errors=True)
        py_s, py_rss, out, py_cpu, py_broker = timed([sys.executable, os.path.join(ROOT, "benches", "python_consumer.py"),
                                                      brokers, TOPIC, f"python-{os.getpid()}", py_lake, str(N)], tansu)
        print(f"python      {py_s:7.2f} s  {N / py_s:10.0f} events/s  peak RSS {py_rss / 1024:5.0f} MiB  "
              f"CPU {py_cpu:.2f} s (broker {py_broker:.2f} s)  {out.strip()}")

        lake = os.path.join(WORK, "lake-broker")
        shutil.rmtree(lake, ignore_errors=True)
        env = dict(os.environ, HAOCHAPING_IDENTITY_SECRET="bench-secret-0123456789", HAOCHAPING_LOG="warn")
        ours_s, ours_rss, out, ours_cpu, ours_broker = timed(
            [BIN, "ingest", "--brokers", brokers, "--topic", TOPIC, "--lake", lake, "--group", f"haochaping-{os.getpid()}",
             "--exit-when-idle", "100ms"], tansu, env=env)
        summary = json.loads(out)
        assert summary["received"] == N, summary
        print(f"haochaping  {ours_s:7.2f} s  {N / ours_s:10.0f} events/s  peak RSS {ours_rss / 1024:5.0f} MiB  "
              f"accepted {summary['accepted']}, duplicates {summary['duplicates']}, dead-lettered {summary['dead_lettered']}")
        # Both processes share the two cores: their CPU over two is the least wall time possible.
        print(f"haochaping  CPU {ours_cpu:.2f} s + broker {ours_broker:.2f} s while it ran: "
              f"at least {(ours_cpu + ours_broker) / 2:.2f} s of wall on 2 cores")

        env = dict(os.environ, HAOCHAPING_BENCH_BROKERS=brokers, HAOCHAPING_BENCH_TOPIC=TOPIC,
                   HAOCHAPING_BENCH_MESSAGES=str(N), HAOCHAPING_LOG="warn", CARGO_TARGET_DIR=TARGET)
        subprocess.run(["cargo", "bench", "--bench", "broker", "--", "--noplot"], cwd=ROOT, env=env, check=True)
        bare_s = criterion_rate("bare_consume")
        engine_s = criterion_rate("engine")
        print(f"bare consume (criterion mean) {bare_s:6.2f} s  {N / bare_s:10.0f} events/s")
        off_s = criterion_rate("engine_alerts_off")
        print(f"engine       (criterion mean) {engine_s:6.2f} s  {N / engine_s:10.0f} events/s")
        print(f"alerts off   (criterion mean) {off_s:6.2f} s  {N / off_s:10.0f} events/s: "
              f"the alert path costs {1 - off_s / engine_s:.0%} of throughput (goal < 10%)")
        print(f"ratios: haochaping / python = {py_s / ours_s:.2f}x (goal 5x); "
              f"engine / bare consume = {bare_s / engine_s:.0%} (goal 60%)")
    finally:
        tansu.kill()
        tansu.wait()


if __name__ == "__main__":
    main()
