"""One command, `true`, every way at once: the floor, OpenSSH, ansible and our HTTP API.

    .venv/bin/python bench/compare.py [--runs 200] [--rounds 5] [--ansible-runs 10]

One throwaway OpenSSH sshd on 127.0.0.1 (tests/sshd.py), and, interleaved in rounds so
machine noise hits every variant alike:

  raw paramiko (floor)        a reused paramiko transport with TCP_NODELAY, `true`
  ssh, ControlMaster          `ssh -o ControlMaster=auto -o ControlPath=... -o
                              ControlPersist=...` through a warm master (a process per call)
  ssh, fresh connection       `ssh ... true`: TCP, key exchange, auth each time; and the
                              same running homelab's wrapped `true` (same work, cold)
  ansible -m command          ansible-core ad hoc, its own ControlPersist master, pipelining
  HTTP embedded               POST .../execute, one daphne, SQLite; keep-alive (as a script
                              with requests.Session), and a new TCP connection per request;
                              and cold: each on a server row of its own (same sshd) with
                              no pooled connection yet (TCP, key exchange, auth each time)
  HTTP scale-out              POST .../execute, 4 daphne workers on one port, PostgreSQL
                              (a throwaway database), Redis db 14; keep-alive; and the same
                              with HOMELAB_DB_POOL_SIZE=8 (Django's PostgreSQL pool, opt-in)

Host keys are pinned everywhere: ssh and ansible read a known_hosts file holding the
daemon's key with StrictHostKeyChecking=yes; the API's server row has it pinned. The HTTP
server runs `timeout -k 1 30.5 true` (the executor's stop guarantee), the others `true`.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import CPUS, Bench, Client, header, interleaved, row, summary
from bench.executor_latency import raw_run, raw_transport
from commands.ssh.channel import server_side_command
from tests.sshd import SSHDaemon, is_running, signal_pids, wait_for


def ssh_options(daemon: SSHDaemon, key: Path, known_hosts: Path) -> list[str]:
    """The client options every ssh variant shares: no user config, this key only,
    the daemon's host key pinned (never StrictHostKeyChecking=no)."""
    return [
        "-F", "/dev/null", "-i", str(key), "-p", str(daemon.port),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR",
    ]  # fmt: skip


def ssh_run(args: list[str], daemon: SSHDaemon, command: str = "true") -> None:
    subprocess.run(
        ["ssh", *args, f"{daemon.username}@{daemon.host}", command],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
    )  # fmt: skip


# What homelab sends for `true` under a rule's 10 s timeout (commands/ssh/channel.py): the
# login shell prints its PID, then execs coreutils' timeout, which stops the command at its
# deadline even if homelab dies. The same work through ControlMaster compares like for like.
WRAPPED_TRUE = server_side_command(["true"], 10)


def stop_master(control_path: Path, options: list[str], daemon: SSHDaemon) -> None:
    """Stop a ControlPersist master by its PID (it detached from us)."""
    target = f"{daemon.username}@{daemon.host}"
    check = subprocess.run(
        ["ssh", *options, "-o", f"ControlPath={control_path}", "-O", "check", target],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    found = re.search(r"pid=(\d+)", check.stderr)
    if found is None:
        return
    pid = int(found.group(1))
    subprocess.run(
        ["ssh", *options, "-o", f"ControlPath={control_path}", "-O", "exit", target],
        capture_output=True, timeout=10,
    )  # fmt: skip
    if not wait_for(lambda: not is_running(pid), timeout=5):
        signal_pids([pid], 9)


def ansible_setup(bench: Bench, daemon: SSHDaemon, known_hosts: Path) -> tuple[list, dict]:
    work = bench.work / "ansible"
    (work / "cp").mkdir(parents=True)
    inventory = work / "inventory.ini"
    inventory.write_text(
        f"box ansible_host={daemon.host} ansible_port={daemon.port} "
        f"ansible_user={daemon.username} ansible_ssh_private_key_file={bench.key} "
        "ansible_python_interpreter=/usr/bin/python3\n"
    )
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_CONFIG": str(work / "none.cfg"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(work / "remote-tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_SSH_ARGS": (
            f"-F /dev/null -o ControlMaster=auto -o ControlPersist=60s "
            f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        ),
    }
    command = [str(Path(sys.executable).parent / "ansible"), "box", "-i", str(inventory),
               "-m", "command", "-a", "true", "-o"]  # fmt: skip
    return command, env


def ansible_run(command: list, env: dict, cwd: Path) -> None:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or "rc=0" not in done.stdout:
        raise RuntimeError(f"ansible failed: {done.stdout}{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="per fast variant")
    parser.add_argument("--fresh-runs", type=int, default=50, help="fresh ssh connections")
    parser.add_argument("--ansible-runs", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4, help="scale-out workers")
    args = parser.parse_args()

    bench = Bench("compare")
    masters: list[Path] = []
    try:
        daemon = bench.sshd()
        known_hosts = bench.work / "known_hosts"
        known_hosts.write_text(f"[{daemon.host}]:{daemon.port} {daemon.host_key}\n")
        options = ssh_options(daemon, bench.key, known_hosts)
        control = bench.work / "cm.sock"
        masters.append(control)
        multiplexed = [*options, "-o", "ControlMaster=auto", "-o", f"ControlPath={control}",
                       "-o", "ControlPersist=120"]  # fmt: skip
        fresh = [*options, "-o", "ControlMaster=no", "-o", "ControlPath=none"]
        ansible, ansible_env = ansible_setup(bench, daemon, known_hosts)

        embedded = bench.embedded_env()
        # box0 is the warm server; box1.. each take one cold command (a connection of its own).
        embedded_key = bench.set_up(embedded, [daemon] * (args.fresh_runs + 2))
        embedded_port, _ = bench.workers(embedded, 1)
        scale_out = bench.scale_out_env()
        scale_key = bench.set_up(scale_out, [daemon])
        scale_port, _ = bench.workers(scale_out, args.workers)
        pooled_env = {**scale_out, "HOMELAB_DB_POOL_SIZE": "8"}
        pooled_port, _ = bench.workers(pooled_env, args.workers)
        # The same two profiles under uvicorn (issue 20: the goals hold under both servers).
        uv_embedded_port, _ = bench.workers(embedded, 1, server="uvicorn")
        uv_pooled_port, _ = bench.workers(pooled_env, args.workers, server="uvicorn")
        kept = Client(embedded_port, embedded_key)
        uv_kept = Client(uv_embedded_port, embedded_key)
        uv_pooled = Client(uv_pooled_port, scale_key)
        new_each = Client(embedded_port, embedded_key, keep_alive=False)
        scaled = Client(scale_port, scale_key)
        pooled = Client(pooled_port, scale_key)
        transport = raw_transport(daemon, bench.key)
        cold_servers = iter(range(1, args.fresh_runs + 2))

        http_embedded = "HTTP embedded (1 daphne, SQLite), keep-alive"
        http_scale = f"HTTP scale-out ({args.workers} daphne, PostgreSQL, Redis), keep-alive"
        http_pooled = "HTTP scale-out, HOMELAB_DB_POOL_SIZE=8 (opt-in), keep-alive"
        uv_embedded = "HTTP embedded, 1 uvicorn, keep-alive"
        uv_pool = f"HTTP scale-out, {args.workers} uvicorn, pool, keep-alive"
        runs = args.runs
        variants = {
            "raw paramiko, `true` (floor)": (lambda: raw_run(transport, "true"), runs),
            "ssh, ControlMaster (warm master)": (lambda: ssh_run(multiplexed, daemon), runs),
            "ssh, ControlMaster, homelab's wrapped `true` (same work)": (
                lambda: ssh_run(multiplexed, daemon, WRAPPED_TRUE), runs),
            "ssh, fresh connection": (lambda: ssh_run(fresh, daemon), args.fresh_runs),
            "ssh, fresh connection, homelab's wrapped `true` (same work)": (
                lambda: ssh_run(fresh, daemon, WRAPPED_TRUE), args.fresh_runs),
            "HTTP embedded, cold (no pooled connection yet)": (
                lambda: kept.execute(f"box{next(cold_servers)}", "true", "t_true"),
                args.fresh_runs),
            "ansible -m command (ControlPersist, pipelining)": (
                lambda: ansible_run(ansible, ansible_env, bench.work), args.ansible_runs),
            http_embedded: (lambda: kept.execute("box0", "true", "t_true"), runs),
            "HTTP embedded, new TCP connection per request": (
                lambda: new_each.execute("box0", "true", "t_true"), runs),
            http_scale: (lambda: scaled.execute("box0", "true", "t_true"), runs),
            http_pooled: (lambda: pooled.execute("box0", "true", "t_true"), runs),
            uv_embedded: (lambda: uv_kept.execute("box0", "true", "t_true"), runs),
            uv_pool: (lambda: uv_pooled.execute("box0", "true", "t_true"), runs),
        }  # fmt: skip
        samples = interleaved(variants, args.rounds)
        transport.close()
        for client in (kept, new_each, scaled, pooled, uv_kept, uv_pooled):
            client.close()
    finally:
        for path in masters:
            stop_master(path, options, daemon)
        for path in (bench.work / "ansible" / "cp").glob("*"):
            stop_master(path, options, daemon)
        bench.close()

    stats = {name: summary(values) for name, values in samples.items()}
    print(f"`true` on one OpenSSH sshd, 127.0.0.1, {CPUS} CPUs; medians of runs interleaved "
          f"in {args.rounds} rounds")  # fmt: skip
    print(f"{'variant':61} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'x floor':>8}")
    floor = stats["raw paramiko, `true` (floor)"][0]
    for name, (p50, p95) in stats.items():
        print(f"{name:61} {len(samples[name]):5d} {p50:8.2f} {p95:8.2f} {p50 / floor:8.1f}")
    master = stats["ssh, ControlMaster (warm master)"][0]
    print()
    print(header("Issue 12, goal 1 (latency), same run"))
    for name in (http_embedded, http_scale, http_pooled):
        p50, p95 = stats[name]
        label = name.split(" (")[0].split(",")[0] + (", pool" if name == http_pooled else "")
        print(row(f"{label}: p50 / ControlMaster p50", f"{p50 / master:.2f}x", "< 1x",
                  p50 < master))  # fmt: skip
        print(row(f"{label}: p95 / p50", f"{p95 / p50:.2f}x", "<= 2x", p95 <= 2 * p50))
    same_work = stats["ssh, ControlMaster, homelab's wrapped `true` (same work)"][0]
    p50 = stats[http_embedded][0]
    print(row("HTTP embedded: p50 / ControlMaster doing the same work", f"{p50 / same_work:.2f}x",
              "(info)", None))  # fmt: skip
    print()
    print(header("Issue 20, goals 1 and 2, same run"))
    labels = {
        http_embedded: ("embedded, daphne", 1.0),
        http_pooled: ("scale-out pool, daphne", 1.2),
        uv_embedded: ("embedded, uvicorn", 1.0),
        uv_pool: ("scale-out pool, uvicorn", 1.2),
    }
    for name, (label, goal) in labels.items():
        p50, p95 = stats[name]
        print(row(f"HTTP {label}: p50 / CM same work p50", f"{p50 / same_work:.2f}x",
                  f"<= {goal}x", p50 <= goal * same_work))  # fmt: skip
        print(row(f"HTTP {label}: p95 / p50", f"{p95 / p50:.2f}x", "<= 2x", p95 <= 2 * p50))
    cold = stats["HTTP embedded, cold (no pooled connection yet)"][0]
    fresh_same = stats["ssh, fresh connection, homelab's wrapped `true` (same work)"][0]
    print(row("HTTP cold first command p50 / fresh ssh same work p50",
              f"{cold / fresh_same:.2f}x", "<= 1.0x", cold <= fresh_same))  # fmt: skip


if __name__ == "__main__":
    main()
