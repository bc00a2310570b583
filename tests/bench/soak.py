#!/usr/bin/env python3
"""Soak: what restarts and reloads leave behind in a long-running `troupe run`.

Usage: soak.py TROUPE PLUGIN_DIR

Three whole-process runs of a pipeline file (testsrc -> f -> checksum), each watched from
outside through its /metrics and /proc:

  embedded restarts  f is the faulty plugin in the node's process, failing fatally on every
                     5th frame: each failure loses the instance and the manager restarts it
  isolated restarts  the same in a worker process that aborts: each restart is a new worker
  reloads            f is a pass-through; 'reload f' lines on the run's stdin, one after the
                     other finishes (each reload starts a new version beside the old one,
                     switches, drains the old one and stops it)

The source sends 2,000 frames/s, so restarts come at up to 400/s. Resident memory, open
files and threads are read once the first tenth of the restarts or reloads are done and the
run is WARM_S seconds old (the baseline: pools, caches and the first workers are in place by
then, and so is what a quit instance keeps until its last timer fires), and again after N
more; the difference over those N is what each one kept.
TROUPE_SOAK_RESTARTS (default 10000) and TROUPE_SOAK_RELOADS (default 1000) set the counts.
"""
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchutil import free_port, usage_of  # noqa: E402

GOAL_KIB = 1024  # resident memory within 1 MiB of the baseline
WARM_S = 8


def metric(port, name, stage):
    """The sum of a counter over the series of one stage (all its replicas)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and f'stage="{stage}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def pipeline(work, f_stage):
    path = os.path.join(work, "soak.yaml")
    with open(path, "w") as out:
        out.write(f"""pipeline: soak
restart: {{max_restarts: 4000000000, period_s: 1, backoff_initial_ms: 0, backoff_max_ms: 0}}
dead_letter_after: 4000000000
stages:
  - {{name: src, plugin: testsrc, config: {{width: 8, height: 8, count: 1000000000, streams: 1, rate: 2000}}}}
  - {f_stage}
  - {{name: sink, plugin: checksum, config: {{output: "{work}/sum.txt"}}}}
edges: ["src -> f -> sink"]
""")
    return path


class run:
    """`troupe run` of a pipeline file with /metrics on a free port, stdin kept open."""

    def __init__(self, troupe, plugins, path, work):
        self.started = time.time()
        self.port = free_port()
        env = dict(os.environ, TROUPE_PLUGIN_PATH=plugins)
        self.log = open(os.path.join(work, "run.log"), "w")
        self.p = subprocess.Popen([troupe, "run", "--no-progress", "--metrics", str(self.port), path], cwd=work,
                                  env=env, stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 30
        while True:
            try:
                metric(self.port, "troupe_instance_frames_in_total", "f")
                return
            except OSError:
                if self.p.poll() is not None or time.time() > deadline:
                    self.stop()
                    sys.exit(f"soak: troupe run did not serve /metrics (see {self.log.name})")
                time.sleep(0.1)

    def wait_for(self, name, stage, n, limit_s):
        """Until the stage's counter reaches n; fails after limit_s."""
        deadline = time.time() + limit_s
        while (v := metric(self.port, name, stage)) < n:
            if self.p.poll() is not None:
                sys.exit(f"soak: troupe run ended early (exit {self.p.returncode}); see {self.log.name}")
            if time.time() > deadline:
                self.stop()
                sys.exit(f"soak: {name} of stage {stage} at {v:.0f} after {limit_s} s, not {n}")
            time.sleep(0.05)
        return v

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        self.log.close()


def row(label, n, before, after):
    kept = (after[0] - before[0]) / n * 1024  # bytes each
    verdict = "meets" if after[0] - before[0] <= GOAL_KIB else "misses"
    print(f"{label:<20} {n:>8} {before[0] / 1024:>9.1f} {after[0] / 1024:>9.1f} {kept:>10.0f} "
          f"{before[1]:>5} {after[1]:>5} {before[2]:>5} {after[2]:>5}   {verdict} the goal")


def restarts(troupe, plugins, label, f_stage, n):
    with tempfile.TemporaryDirectory() as work:
        r = run(troupe, plugins, pipeline(work, f_stage), work)
        try:
            r.wait_for("troupe_instance_restarts_total", "f", max(1, n // 10), 600)
            time.sleep(max(0.0, r.started + WARM_S - time.time()))
            warm = metric(r.port, "troupe_instance_restarts_total", "f")
            before = usage_of(r.p.pid)
            r.wait_for("troupe_instance_restarts_total", "f", warm + n, 3600)
            after = usage_of(r.p.pid)
        finally:
            r.stop()
    row(label, n, before, after)


def reloads(troupe, plugins, n):
    with tempfile.TemporaryDirectory() as work:
        r = run(troupe, plugins, pipeline(work, "{name: f, plugin: passthrough}"), work)
        try:
            warm = max(1, n // 10)

            def reloaded():
                with open(r.log.name) as f:
                    return f.read().count("] reloaded: ")

            def reload_up_to(k):
                # One at a time: a reload asked while the last old version still drains is
                # refused (busy, try again), so the next is asked once the last is done.
                deadline = time.time() + 600
                while (done := reloaded()) < k:
                    if time.time() > deadline or r.p.poll() is not None:
                        r.stop()
                        sys.exit(f"soak: {done} reloads, not {k}; see {r.log.name}")
                    r.p.stdin.write("reload f\n")
                    r.p.stdin.flush()
                    wait_until = time.time() + 0.2  # then asked again (refused if still busy)
                    while reloaded() == done and time.time() < wait_until:
                        time.sleep(0.005)

            reload_up_to(warm)
            time.sleep(max(0.0, r.started + WARM_S - time.time()))
            before = usage_of(r.p.pid)
            reload_up_to(warm + n)
            after = usage_of(r.p.pid)
        finally:
            r.stop()
    row("reloads", n, before, after)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: soak.py TROUPE PLUGIN_DIR")
    troupe, plugins = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    n = int(os.environ.get("TROUPE_SOAK_RESTARTS", "10000"))
    m = int(os.environ.get("TROUPE_SOAK_RELOADS", "1000"))
    print("soak: one `troupe run` per row; resident memory (MiB), open files and threads after the first tenth")
    print("and at the end; the goal: resident memory within 1 MiB of where it was")
    print(f"{'what':<20} {'count':>8} {'rss MiB':>9} {'then':>9} {'B each':>10} {'fds':>5} {'then':>5} "
          f"{'thr':>5} {'then':>5}")
    restarts(troupe, plugins, "embedded restarts",
             "{name: f, plugin: faulty, mode: embedded, config: {action: fatal, every: 5}}", n)
    restarts(troupe, plugins, "isolated restarts",
             "{name: f, plugin: faulty, mode: isolated, config: {action: abort, every: 5}}", n)
    reloads(troupe, plugins, m)


if __name__ == "__main__":
    main()
