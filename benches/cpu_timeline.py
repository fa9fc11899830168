#!/usr/bin/env python3
"""How busy a command keeps the cores over its run: its CPU (user + system, all threads) in each
50 ms interval, in cores, then its wall and CPU totals.

    HAOCHAPING_IDENTITY_SECRET=… python3 benches/cpu_timeline.py target/release/haochaping ingest --from-file F

On two cores, 2.0 is both busy; a run's idle stretches (a serial start, a commit at the end) show as
low values.
"""
import os
import subprocess
import sys
import time

INTERVAL = 0.05


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tick = os.sysconf("SC_CLK_TCK")
    start = last = time.perf_counter()
    before, cores = 0, []
    # Asks whether the child ended without reaping it: its stat file stays readable until wait4
    # below reaps it.
    while os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        time.sleep(INTERVAL)
        now = time.perf_counter()
        try:
            ticks = cpu_ticks(child.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        cores.append((ticks - before) / tick / (now - last))
        before, last = ticks, now
    # The totals from the kernel's account of the ended child, the last interval included.
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    print(" ".join(f"{c:.1f}" for c in cores))
    print(f"wall {wall:.2f} s, CPU {usage.ru_utime + usage.ru_stime:.2f} s, "
          f"exit {os.waitstatus_to_exitcode(status)}")


if __name__ == "__main__":
    main()
