"""What the side-by-side scripts share: where the release binary is, and timing a child process."""
import os
import subprocess
import sys
import time

CACHE = os.path.join(os.path.expanduser("~"), ".cache", "haochaping")
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(CACHE, "target"))
BIN = os.path.join(TARGET, "release", "haochaping")

# Runs a command in a fresh wrapper process, so that the peak RSS reported is that command's alone.
WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
sys.stderr.write("\\npeak_rss_kib=%d cpu_s=%.3f\\n" % (usage.ru_maxrss, usage.ru_utime + usage.ru_stime))
sys.exit(code)
"""


def run(cmd, env=None):
    """Runs cmd to completion; returns (wall seconds, peak RSS in KiB, stdout). Exits on failure."""
    elapsed, peak, stdout, _ = run_cpu(cmd, env)
    return elapsed, peak, stdout


def run_cpu(cmd, env=None):
    """As `run`, and the command's CPU seconds (user + system) as the fourth value."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {result.stderr[-2000:]}")
    tail = result.stderr.rsplit("peak_rss_kib=", 1)[1].split()
    peak, cpu = int(tail[0]), float(tail[1].removeprefix("cpu_s="))
    return elapsed, peak, result.stdout, cpu
