"""Start-up: `./manage.py --help` and `make run` until /api/docs answers (issue 20, goal 5).

    .venv/bin/python bench/startup.py [--runs 5] [--baseline TREE_OR_COMMIT]

`./manage.py --help` runs with a secret key set (without one Django lists only its own
commands, which loads none of ours); wall time and the CPU the process used, per run.
`make run` serves the embedded default on a free loopback port with a throwaway SQLite
database: the first run creates it (migrate), the later ones find it; each run is timed
from the start of `make` to the first 200 of GET /api/docs, then stopped with Ctrl-C
(SIGINT to its process group, by PID). With --baseline, the same runs of another tree
(a directory, or a commit unpacked with `git archive`) interleaved with ours.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, ROOT, baseline_tree, header, row
from tests.sshd import free_port

HELP_GOAL, RUN_GOAL = 1.0, 3.0


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def manage_help(tree: Path) -> tuple[float, float]:
    """(wall s, CPU s) of one `./manage.py --help` in tree."""
    env = {**os.environ, "DJANGO_SECRET_KEY": "bench-only-" + "x" * 40}
    cpu, started = children_cpu(), time.perf_counter()
    subprocess.run(
        [str(BIN / "python"), "manage.py", "--help"],
        cwd=tree, env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return time.perf_counter() - started, children_cpu() - cpu


def make_run(tree: Path, database: Path) -> float:
    """Seconds from `make run` to the first 200 of /api/docs; the server stopped after."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SECRET_KEY"}
    env["DATABASE_URL"] = f"sqlite:///{database}"
    started = time.perf_counter()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", f"PORT={port}"],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"make run in {tree} exited with {proc.returncode}")
            if time.perf_counter() - started > 120:
                raise RuntimeError(f"make run in {tree} did not serve /api/docs in 120 s")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def measure(runs: int, baseline: str | None, work: Path) -> tuple[dict, dict]:
    """({tree: [(wall, cpu) of --help]}, {tree: [seconds of make run]}), interleaved."""
    trees = {"ours": ROOT}
    if baseline:
        trees["baseline"] = baseline_tree(baseline, work)
        venv = trees["baseline"] / ".venv"
        if not venv.exists():  # make run's stamp: the baseline runs on our installed venv
            venv.symlink_to(BIN.parent)
    helps = {name: [] for name in trees}
    serves = {name: [] for name in trees}
    for tree in trees.values():
        manage_help(tree)  # warm the file cache and the .pyc files
    for _ in range(runs):
        for name, tree in trees.items():
            helps[name].append(manage_help(tree))
            serves[name].append(make_run(tree, work / f"{name}.sqlite3"))
    return helps, serves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", metavar="TREE_OR_COMMIT")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="homelab-startup-"))
    try:
        helps, serves = measure(args.runs, args.baseline, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(header(f"Issue 20, goal 5: start-up, {args.runs} runs each, interleaved"))
    for name in helps:
        walls = [wall for wall, _ in helps[name]]
        cpus = [cpu for _, cpu in helps[name]]
        wall = statistics.median(walls)
        print(row(f"{name}: ./manage.py --help, wall s (median)", f"{wall:.2f}",
                  f"<= {HELP_GOAL:g}", wall <= HELP_GOAL))  # fmt: skip
        print(row("  min / max wall s", f"{min(walls):.2f} / {max(walls):.2f}"))
        print(row("  CPU s (median)", f"{statistics.median(cpus):.2f}"))
        first, later = serves[name][0], serves[name][1:] or serves[name]
        print(row(f"{name}: make run -> /api/docs 200, new database s", f"{first:.2f}",
                  f"<= {RUN_GOAL:g}", first <= RUN_GOAL))  # fmt: skip
        warm = statistics.median(later)
        print(row("  database in place s (median)", f"{warm:.2f}", f"<= {RUN_GOAL:g}",
                  warm <= RUN_GOAL))  # fmt: skip


if __name__ == "__main__":
    main()
