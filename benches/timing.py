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
sys.stderr.write("\\npeak_rss_kib=%d\\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


def run(cmd, env=None):
    """Runs cmd to completion; returns (wall seconds, peak RSS in KiB, stdout). Exits on failure."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{cmd[0]} failed: {result.stderr[-2000:]}")
    peak = int(result.stderr.rsplit("peak_rss_kib=", 1)[1].split()[0])
    return elapsed, peak, result.stdout
