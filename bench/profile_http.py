"""Where the time of one warm POST .../execute goes, stage by stage (issue 12's profile).

    .venv/bin/python bench/profile_http.py [--runs 200] [--servers daphne,uvicorn]

One throwaway sshd, the embedded (SQLite) and scale-out (PostgreSQL, Redis db 14) profiles,
one worker each, serving bench/profile_asgi.py: homelab's app with timers around each
stage (bench/profile_hooks.py) and a timing middleware first in MIDDLEWARE
(bench/profile_settings.py). A keep-alive client sends `true` one request at a time,
interleaved between the setups; each request's stage times are logged by the worker.
Prints the median of each stage in ms. Rows marked = are derived (a span minus the
stages timed inside it); SSH runs on the runner thread while the request thread waits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import BIN, CPUS, ROOT, Bench, Client

APP = "bench.profile_asgi:application"
UVICORN = ["--http", "httptools", "--loop", "uvloop", "--no-access-log", "--lifespan", "off"]


def derived(stage: dict[str, float]) -> dict[str, float]:
    """The table's rows for one request, from its logged spans (ms)."""
    get = lambda name: stage.get(name, 0.0)  # noqa: E731
    view = get("execute view")
    execute = get("execute_command")
    return {
        "client total (keep-alive)": get("client"),
        "= ASGI server, loopback TCP, client": get("client") - get("asgi app"),
        "= ASGI handler: request object, thread hop": get("asgi app") - get("middleware + view"),
        "= Django middleware + DRF dispatch": get("middleware + view")
        - get("DRF initial (auth, permission)")
        - view
        - get("JSON render"),
        "DRF initial (auth, permission)": get("DRF initial (auth, permission)"),
        "  of which auth: API key lookup": get("auth: API key lookup"),
        "server lookup": get("server lookup"),
        "key scope check": get("key scope check"),
        "quota (throttle)": get("quota (throttle)"),
        "execute_command": execute,
        "  whitelist resolve": get("whitelist resolve"),
        "  audit row save (before SSH)": get("audit row save (before SSH)"),
        "  SSH (executor.execute, runner thread)": get("SSH (executor.execute)"),
        "  audit row finish + result frame": get("audit row finish + result frame"),
        "  = rest: runner hop, live start, close": execute
        - get("whitelist resolve")
        - get("audit row save (before SSH)")
        - get("SSH (executor.execute)")
        - get("audit row finish + result frame"),
        "result serializer": get("result serializer"),
        "= rest of the view (request body, validation)": view
        - get("server lookup")
        - get("key scope check")
        - get("quota (throttle)")
        - execute
        - get("result serializer"),
        "JSON render": get("JSON render"),
        "SQL statements (all, time)": get("SQL statements"),
        "SQL statements (count)": get("n SQL statements"),
        "DB connects (time)": get("DB connect"),
        "DB connects (count)": get("n DB connect"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default="daphne", help="daphne and/or uvicorn")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:PROFILE:KEY=VALUE,...",
        help="one more daphne setup: PROFILE (embedded or scale-out) with these extra "
        "environment variables (bench/profile_settings.py reads HOMELAB_BENCH_*); "
        "TREE=/path serves another checkout of the project instead",
    )
    args = parser.parse_args()

    bench = Bench("profile")
    setups: dict[str, tuple[Client, Path]] = {}
    keys: dict[str, str] = {}
    try:
        daemon = bench.sshd()
        profiles = {"embedded": bench.embedded_env(), "scale-out": bench.scale_out_env()}
        for profile, env in profiles.items():
            env["DJANGO_SETTINGS_MODULE"] = "bench.profile_settings"
            key = keys[profile] = bench.set_up(env, [daemon])
            for server in args.servers.split(","):
                log = bench.work / f"profile-{profile}-{server}.jsonl"
                port = start(bench, {**env, "HOMELAB_PROFILE_LOG": str(log)}, server)
                setups[f"{profile}, {server}"] = (Client(port, key), log)
        for spec in args.variant:
            label, profile, pairs = [*spec.split(":", 2), ""][:3]
            extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
            tree = Path(extra.pop("TREE", ROOT))
            env = {**profiles[profile], **extra}
            log = bench.work / f"profile-{label}.jsonl"
            env["HOMELAB_PROFILE_LOG"] = str(log)
            port = bench.workers(env, 1, app=APP, cwd=tree)[0]
            setups[label] = (Client(port, keys[profile]), log)
        clients: dict[str, list[float]] = {name: [] for name in setups}
        for client, _ in setups.values():
            client.execute("box0", "true", "t_true")  # warm
        time.sleep(0.5)  # a request's line is written just after its response
        for _, log in setups.values():
            log.write_text("")
        for _ in range(args.rounds):
            for name, (client, _) in setups.items():
                for _ in range(max(args.runs // args.rounds, 1)):
                    started = time.perf_counter()
                    client.execute("box0", "true", "t_true")
                    clients[name].append((time.perf_counter() - started) * 1000)
        for client, _ in setups.values():
            client.close()
        time.sleep(0.5)  # the last log lines are written after the response
        tables = {}
        for name, (_, log) in setups.items():
            lines = log.read_text().splitlines()[-len(clients[name]) :]
            stages = [json.loads(line) for line in lines]
            rows = [derived({**s, "client": c}) for s, c in zip(stages, clients[name], strict=True)]
            tables[name] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    finally:
        bench.close()

    names = list(tables)
    print(f"POST .../execute `true`, one request at a time, medians in ms, {CPUS} CPUs, "
          f"{args.runs} requests per setup")  # fmt: skip
    width = max(max(len(name) for name in names) + 2, 12)
    print(f"{'stage':48}" + "".join(f"{name:>{width}}" for name in names))
    for key in tables[names[0]]:
        print(f"{key:48}" + "".join(f"{tables[name][key]:{width}.2f}" for name in names))


def start(bench: Bench, env: dict, server: str) -> int:
    if server == "daphne":
        return bench.workers(env, 1, app=APP)[0]
    from tests.sshd import free_port

    port = free_port()
    log = (bench.work / f"uvicorn-{port}.log").open("ab")
    proc = __import__("subprocess").Popen(
        [str(BIN / "uvicorn"), "--host", "127.0.0.1", "--port", str(port), *UVICORN, APP],
        cwd=str(Path(__file__).resolve().parent.parent), env=env, stdout=log, stderr=log,
    )  # fmt: skip
    bench.procs.append(proc)
    bench.wait_until_serving(port, [proc.pid])
    return port


if __name__ == "__main__":
    main()
