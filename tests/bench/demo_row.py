#!/usr/bin/env python3
"""The demo pipeline (examples/demo.yaml) as users run it, and where its CPU time goes.

Usage: demo_row.py TROUPE PLUGIN_DIR DEMO_YAML

Three whole-process `troupe run --report` of the demo file: the best frames/s (the sinks'
frames over the run's wall time) and the CPU time of that run (user + system, all threads,
from wait4). Then one more run under `perf record` (999 samples a second on every thread),
its samples split by where they fell: the plugins' libraries (libtroupe_*.so), the runtime
(troupe, CAF, Cap'n Proto, libc and the other libraries) and the kernel. Work a plugin hands
to libc (a memcpy, a memset) counts as the runtime's, so the plugins' share is a lower bound.
Without perf, the split is left out.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time


def one(troupe, plugins, demo, work, prefix=()):
    env = dict(os.environ, TROUPE_PLUGIN_PATH=plugins)
    report = os.path.join(work, "report.json")
    t0 = time.time()
    p = subprocess.Popen(list(prefix) + [troupe, "run", "--no-progress", "--report", report, demo], cwd=work,
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.time() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"demo_row: troupe run {demo} failed (exit {os.waitstatus_to_exitcode(status)})")
    with open(report) as f:
        r = json.load(f)
    return r["sinks_took"] / wall, usage.ru_utime + usage.ru_stime, wall


def split(troupe, plugins, demo, work):
    """(plugins %, runtime %, kernel %) of the samples of one run under perf, or None."""
    if not shutil.which("perf"):
        return None
    data = os.path.join(work, "perf.data")
    try:
        one(troupe, plugins, demo, work, ["perf", "record", "-q", "-F", "999", "-o", data, "--"])
        out = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio"], capture_output=True,
                             text=True, timeout=300).stdout
    except (SystemExit, subprocess.SubprocessError):
        return None
    shares = {"plugins": 0.0, "runtime": 0.0, "kernel": 0.0}
    for line in out.splitlines():
        m = re.match(r"\s*([0-9.]+)%\s+(\S+)", line)
        if not m:
            continue
        share, dso = float(m.group(1)), m.group(2)
        key = "plugins" if dso.startswith("libtroupe_") else "kernel" if dso.startswith("[kernel") else "runtime"
        shares[key] += share
    return shares if sum(shares.values()) > 0 else None


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: demo_row.py TROUPE PLUGIN_DIR DEMO_YAML")
    troupe, plugins, demo = (os.path.abspath(a) for a in sys.argv[1:])
    with tempfile.TemporaryDirectory() as work:
        rate, cpu, wall = max((one(troupe, plugins, demo, work) for _ in range(3)), key=lambda r: r[0])
        shares = split(troupe, plugins, demo, work)
    print(f"the demo pipeline ({os.path.basename(demo)}), whole process, best of 3: {rate:.1f} frames/s "
          f"({wall:.2f} s, {cpu:.2f} s of CPU)")
    if shares is None:
        print("  where the CPU time goes: perf is not available here")
    else:
        print(f"  CPU samples (perf): plugins {shares['plugins']:.1f}%, the runtime and libraries "
              f"{shares['runtime']:.1f}%, the kernel {shares['kernel']:.1f}%")


if __name__ == "__main__":
    main()
