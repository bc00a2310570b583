#!/usr/bin/env python3
"""Scale: many idle instances in one `troupe run`, whole process.

Usage: scale.py TROUPE PLUGIN_DIR

A pipeline file of STAGES pass-through stages of REPLICAS replicas each between a testsrc and a
checksum sink (testsrc -> s1 -> ... -> sSTAGES -> checksum). The source sends one frame a second,
so nearly every instance is idle. The stages run the passthrough plugin under a manifest of the
benchmark's own that asks for no memory (memory_mb: 0; the shipped one asks 256 MiB a replica,
and a node admits replicas only up to its memory, embedded or not). Printed per row:

  start    from exec to the manager's "running" line (every instance started)
  stop     from SIGINT (the user's Ctrl-C: a drain, then every instance stopped) to exit
  rss      resident memory once every instance runs, in all and per instance
  scrape   the time and size of one /metrics scrape of them all (every instance's series)

The goal: 100,000 idle instances under 2 GiB resident, started in under 10 s. The first row,
1,000 instances, is the baseline the per-instance figures of the others are measured against.
TROUPE_SCALE_STAGES (default 100) and TROUPE_SCALE_REPLICAS (default 1000) set the largest row.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import free_port, usage_of  # noqa: E402

GOAL_INSTANCES = 100_000
GOAL_RSS_GIB = 2
GOAL_START_S = 10


def pipeline(work, stages, replicas):
    path = os.path.join(work, "scale.yaml")
    names = [f"s{i}" for i in range(1, stages + 1)]
    with open(path, "w") as out:
        out.write("pipeline: scale\nstages:\n")
        out.write("  - {name: src, plugin: testsrc, config: {width: 8, height: 8, count: 1000000, rate: 1}}\n")
        for n in names:
            out.write(f"  - {{name: {n}, plugin: passthrough, replicas: {replicas}, routing: round_robin}}\n")
        out.write(f'  - {{name: sink, plugin: checksum, config: {{output: "{work}/sum.txt"}}}}\n')
        out.write(f'edges: ["src -> {" -> ".join(names)} -> sink"]\n')
    return path


def small_manifest(work, plugins):
    """A plugin directory whose passthrough asks for no memory (it shadows the shipped one)."""
    d = os.path.join(work, "plugins", "passthrough")
    os.makedirs(d)
    with open(os.path.join(plugins, "passthrough", "plugin.yaml")) as f:
        text = f.read()
    with open(os.path.join(d, "plugin.yaml"), "w") as f:
        f.write(re.sub(r"memory_mb: \d+", "memory_mb: 0", text))
    lib = re.search(r"library: (\S+)", text).group(1)
    os.symlink(os.path.join(plugins, "passthrough", lib), os.path.join(d, lib))
    return os.path.join(work, "plugins")


def one(troupe, plugins, stages, replicas, scrape):
    """(instances, start s, stop s, rss KiB, scrape s, scrape bytes) of one run."""
    with tempfile.TemporaryDirectory() as work:
        path = pipeline(work, stages, replicas)
        port = free_port()
        env = dict(os.environ, TROUPE_PLUGIN_PATH=small_manifest(work, plugins) + ":" + plugins)
        log = open(os.path.join(work, "run.log"), "w+")
        args = [troupe, "run", "--no-progress", path] + (["--metrics", str(port)] if scrape else [])
        t0 = time.time()
        p = subprocess.Popen(args, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            running = re.compile(r"pipeline 'scale' running: \d+ stages, (\d+) instances")
            deadline = t0 + 600
            instances = None
            while instances is None:
                log.seek(0)
                m = running.search(log.read())
                if m:
                    instances = int(m.group(1))
                    break
                if p.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    sys.exit(f"scale: troupe run did not start every instance:\n{log.read()[-3000:]}")
                time.sleep(0.01)
            started = time.time() - t0
            time.sleep(1)  # settled: the first frames went through
            rss = usage_of(p.pid)[0]
            scrape_s, scrape_bytes = 0.0, 0
            if scrape:
                t = time.time()
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=300) as r:
                    scrape_bytes = len(r.read())
                scrape_s = time.time() - t
            t = time.time()
            p.send_signal(signal.SIGINT)
            p.wait(timeout=600)
            stopped = time.time() - t
            if p.returncode != 0:
                log.seek(0)
                sys.exit(f"scale: troupe run exited {p.returncode}:\n{log.read()[-3000:]}")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    return instances, started, stopped, rss, scrape_s, scrape_bytes


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scale.py TROUPE PLUGIN_DIR")
    troupe, plugins = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    stages = int(os.environ.get("TROUPE_SCALE_STAGES", "100"))
    replicas = int(os.environ.get("TROUPE_SCALE_REPLICAS", "1000"))
    print("scale: one `troupe run` per row, idle pass-through instances (testsrc at 1 frame/s -> stages -> checksum)")
    print(f"{'instances':>10} {'stages':>7} {'start s':>8} {'stop s':>8} {'rss MiB':>9} {'KiB each':>9} "
          f"{'scrape s':>9} {'scrape MB':>10}")
    rows = [(1, 1000), (10, 1000), (stages, replicas)]
    base = None
    last = None
    for s, r in rows:
        n, started, stopped, rss, scrape_s, scrape_bytes = one(troupe, plugins, s, r, scrape=True)
        if base is None:
            base = (n, rss)
            each = rss / n
        else:
            each = (rss - base[1]) / (n - base[0])  # beyond the baseline run's
        print(f"{n:>10} {s:>7} {started:>8.2f} {stopped:>8.2f} {rss / 1024:>9.1f} {each:>9.2f} "
              f"{scrape_s:>9.2f} {scrape_bytes / 1e6:>10.1f}")
        last = (n, started, rss)
    n, started, rss = last
    meets = n >= GOAL_INSTANCES and rss < GOAL_RSS_GIB * 1024 * 1024 and started < GOAL_START_S
    print(f"goal: {GOAL_INSTANCES:,} idle instances under {GOAL_RSS_GIB} GiB resident, started in under "
          f"{GOAL_START_S} s: {n:,} in {rss / 1024 / 1024:.2f} GiB, started in {started:.1f} s: "
          f"{'meets' if meets else 'misses'} the goal")


if __name__ == "__main__":
    main()
