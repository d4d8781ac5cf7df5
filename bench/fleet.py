"""The fleet: `true` on N servers at once, every way, side by side (issue 18).

    .venv/bin/python bench/fleet.py [--sizes 20,50] [--rounds 5] [--scale 200] [--memory 20]

Starts max(--sizes) OpenSSH sshd daemons on 127.0.0.1 (tests/sshd.py), the embedded
profile (one daphne, SQLite) with a server row for each (host keys pinned), and for each
N in --sizes times, interleaved in rounds so machine noise hits every variant alike:

  batch                 POST /api/v1/batches/ {"servers": box0..boxN-1, "max_concurrency": N,
                        "wait": true}: wall time of the one request
  ControlMaster fan-out N `ssh` processes at once, each through a warm ControlMaster of its
                        host, running homelab's own wrapped `true` (same work)
  fresh ssh fan-out     N `ssh` processes at once, each a fresh login (what pssh does)
  ansible -f N          `ansible all -m command -a true -f N` (its own ControlPersist)
  one execute           POST .../execute of `true` on box0 (for scale)

Host keys are pinned everywhere (known_hosts with StrictHostKeyChecking=yes for ssh and
ansible). Then, with --scale S, one batch of `true` on S servers (S sshd daemons): wall
time, the worker's RSS and threads; and with --memory M, M targets each printing 100 MB
followed by two WebSocket subscribers: the worker's RSS growth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    CPUS,
    ROOT,
    Bench,
    Client,
    header,
    interleaved,
    row,
    rss_and_threads,
    summary,
)
from bench.compare import WRAPPED_TRUE, ssh_options, stop_master
from tests.sshd import SSHDaemon

BIG = "sh -c 'yes | head -c 100000000'"


def fan_out(commands: list[list[str]]) -> None:
    """Start every command at once and wait for all; each must succeed."""
    procs = [
        subprocess.Popen(
            c, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for c in commands
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"ssh failed ({proc.returncode}): {err.decode()[-300:]}")


def batch(client: Client, servers: list[str], command: str = "true", action: str = "t_true",
          wait: bool = True) -> dict:  # fmt: skip
    status, body = client.post("/api/v1/batches/", {
        "command": command, "action_type": action, "servers": servers,
        "max_concurrency": len(servers), "wait": wait,
    })  # fmt: skip
    if status not in (200, 202) or (wait and body["status"] != "succeeded"):
        raise RuntimeError(f"batch answered {status}: {str(body)[:500]}")
    return body


def ansible_fan_out(bench: Bench, daemons: list[SSHDaemon], known_hosts: Path):
    work = bench.work / "ansible"
    (work / "cp").mkdir(parents=True, exist_ok=True)
    inventory = work / "inventory.ini"
    inventory.write_text("".join(
        f"box{n} ansible_host={d.host} ansible_port={d.port} ansible_user={d.username} "
        f"ansible_ssh_private_key_file={bench.key} ansible_python_interpreter=/usr/bin/python3\n"
        for n, d in enumerate(daemons)
    ))  # fmt: skip
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_CONFIG": str(work / "none.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_SSH_ARGS": (
            f"-F /dev/null -o ControlMaster=auto -o ControlPersist=300s "
            f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        ),
    }
    ansible = str(Path(sys.executable).parent / "ansible")

    def run(count: int) -> None:
        limit = ",".join(f"box{n}" for n in range(count))
        done = subprocess.run(
            [ansible, "all", "-i", str(inventory), "--limit", limit, "-m", "command",
             "-a", "true", "-f", str(count), "-o"],
            env=env, cwd=bench.work, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0 or done.stdout.count("rc=0") != count:
            raise RuntimeError(f"ansible failed: {done.stdout[-500:]}{done.stderr[-500:]}")

    return run, work / "cp"


def sample_rss(pid: int, stop: threading.Event, peak: list[float]) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_and_threads(pid)[0])
        time.sleep(0.05)


def memory_case(bench: Bench, port: int, worker: int, key: str, count: int) -> tuple:
    """count targets printing 100 MB each, two WebSocket subscribers: (RSS before, peak)."""
    from websockets.sync.client import connect

    client = Client(port, key)
    servers = [f"box{n}" for n in range(count)]
    baseline = rss_and_threads(worker)[0]
    peak = [baseline]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(worker, stop, peak))
    sampler.start()
    started = batch(client, servers, BIG, "t_big", wait=False)

    def subscribe() -> None:
        url = f"ws://127.0.0.1:{port}/ws/v1/batches/{started['batch_id']}/"
        with connect(url, additional_headers={"Authorization": f"Api-Key {key}"},
                     max_size=None, open_timeout=30) as socket:  # fmt: skip
            while '"type":"summary"' not in socket.recv(timeout=300):
                pass

    subscribers = [threading.Thread(target=subscribe) for _ in range(2)]
    for thread in subscribers:
        thread.start()
    for thread in subscribers:
        thread.join()
    stop.set()
    sampler.join()
    client.close()
    return baseline, peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="20,50")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ansible-rounds", type=int, default=3)
    parser.add_argument("--scale", type=int, default=200, help="0 skips the scale run")
    parser.add_argument("--memory", type=int, default=20, help="0 skips the memory case")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")]
    most = max([*sizes, args.memory])

    bench = Bench("fleet")
    masters: list[tuple[Path, list[str], SSHDaemon]] = []
    results: dict[int, dict[str, list[float]]] = {}
    scale_facts = memory_facts = None
    ansible_cp: Path | None = None
    try:
        daemons = [bench.sshd() for _ in range(most)]
        known_hosts = bench.work / "known_hosts"
        known_hosts.write_text("".join(f"[{d.host}]:{d.port} {d.host_key}\n" for d in daemons))
        env = bench.embedded_env(HOMELAB_BATCH_MAX_SERVERS=str(max(most, args.scale)))
        key = bench.set_up(env, daemons)
        subprocess.run([sys.executable, "manage.py", "allowcommand", "t_big", BIG],
                       cwd=ROOT, env=env, check=True, capture_output=True)  # fmt: skip
        port, (worker,) = bench.workers(env, 1)
        client = Client(port, key)
        master_cmds, fresh_cmds = [], []
        for n, daemon in enumerate(daemons):
            options = ssh_options(daemon, bench.key, known_hosts)
            control = bench.work / f"cm-{n}.sock"
            masters.append((control, options, daemon))
            target = f"{daemon.username}@{daemon.host}"
            master_cmds.append(["ssh", *options, "-o", "ControlMaster=auto", "-o",
                                f"ControlPath={control}", "-o", "ControlPersist=600",
                                target, WRAPPED_TRUE])  # fmt: skip
            fresh_cmds.append(["ssh", *options, "-o", "ControlMaster=no", "-o",
                               "ControlPath=none", target, "true"])  # fmt: skip
        ansible_run, ansible_cp = ansible_fan_out(bench, daemons, known_hosts)
        for size in sizes:
            servers = [f"box{n}" for n in range(size)]
            variants = {
                "batch": (lambda s=servers: batch(client, s), args.rounds),
                "ControlMaster fan-out": (lambda s=size: fan_out(master_cmds[:s]), args.rounds),
                "fresh ssh fan-out": (lambda s=size: fan_out(fresh_cmds[:s]), args.rounds),
                "one execute": (lambda: client.execute("box0", "true", "t_true"), args.rounds),
            }
            results[size] = interleaved(variants, args.rounds)
            results[size]["ansible -f N"] = []
            ansible_run(size)  # warm its masters
            for _ in range(args.ansible_rounds):
                started = time.perf_counter()
                ansible_run(size)
                results[size]["ansible -f N"].append((time.perf_counter() - started) * 1000)
        if args.memory:
            memory_facts = memory_case(bench, port, worker, key, args.memory)
        client.close()
        bench.stop_workers([worker])
        if args.scale:
            scale_facts = scale_run(bench, args.scale, daemons)
    finally:
        for control, options, daemon in masters:
            stop_master(control, options, daemon)
        for path in ansible_cp.glob("*") if ansible_cp is not None else []:
            stop_master(path, masters[0][1], masters[0][2])
        bench.close()
    report(results, sizes, args, scale_facts, memory_facts)


def scale_run(bench: Bench, count: int, daemons: list[SSHDaemon]) -> tuple:
    """One batch of `true` on count servers: (wall s, statuses, RSS MB, threads)."""
    more = [bench.sshd() for _ in range(count - len(daemons))] if count > len(daemons) else []
    every = (daemons + more)[:count]
    env = bench.embedded_env("scale", HOMELAB_BATCH_MAX_SERVERS=str(count))
    key = bench.set_up(env, every)
    port, (worker,) = bench.workers(env, 1)
    client = Client(port, key)
    peak = [rss_and_threads(worker)[0]]
    stop = threading.Event()
    sampler = threading.Thread(target=sample_rss, args=(worker, stop, peak))
    sampler.start()
    started = time.perf_counter()
    body = batch(client, [f"box{n}" for n in range(count)])
    wall = time.perf_counter() - started
    threads = rss_and_threads(worker)[1]
    stop.set()
    sampler.join()
    client.close()
    return wall, body["counts"], peak[0], threads


def report(results, sizes, args, scale_facts, memory_facts) -> None:
    print(f"`true` on N OpenSSH sshd, 127.0.0.1, {CPUS} CPUs, embedded profile; wall ms of "
          f"one fan-out, {args.rounds} rounds interleaved")  # fmt: skip
    print(f"{'N':>4} {'variant':28} {'n':>3} {'p50 ms':>9} {'p95 ms':>9}")
    for size in sizes:
        for name, values in results[size].items():
            p50, p95 = summary(values)
            print(f"{size:4d} {name:28} {len(values):3d} {p50:9.1f} {p95:9.1f}")
    print()
    print(header("Issue 18, fan-out goals, same run"))
    for size in sizes:
        stats = {name: summary(values) for name, values in results[size].items()}
        b50, b95 = stats["batch"]
        cm = stats["ControlMaster fan-out"][0]
        fresh = stats["fresh ssh fan-out"][0]
        print(row(f"N={size}: batch p50 / ControlMaster fan-out p50", f"{b50 / cm:.2f}x",
                  "<= 1.0x", b50 <= cm))  # fmt: skip
        print(row(f"N={size}: batch p50 / fresh ssh fan-out p50", f"{b50 / fresh:.2f}x",
                  "<= 0.1x", b50 <= 0.1 * fresh))  # fmt: skip
        print(row(f"N={size}: batch p95 / p50", f"{b95 / b50:.2f}x", "<= 2x", b95 <= 2 * b50))
    if scale_facts:
        wall, counts, rss, threads = scale_facts
        ok = counts.get("succeeded") == args.scale
        print(row(f"{args.scale} servers, one batch: all succeeded", f"{counts.get('succeeded')}",
                  f"{args.scale}", ok))  # fmt: skip
        print(row(f"{args.scale} servers, one batch: wall s", f"{wall:.2f}"))
        print(row(f"{args.scale} servers: worker peak RSS MB / threads after",
                  f"{rss:.0f} / {threads}"))  # fmt: skip
    if memory_facts:
        before, peak = memory_facts
        grew = peak - before
        print(row(f"{args.memory} targets x 100 MB, 2 subscribers: RSS growth MB",
                  f"{grew:.1f}", "< 60", grew < 60))  # fmt: skip


if __name__ == "__main__":
    main()
