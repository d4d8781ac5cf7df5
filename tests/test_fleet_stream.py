"""A batch's WebSocket against a real daphne, real sshd daemons and a real WebSocket client:
every target's output frames (with `server`) and result, then the summary; replay for a
late subscriber; tickets; refusals."""

from __future__ import annotations

import os

import pytest

from tests.live import Daphne, call, follow, key_headers, manage, set_up
from tests.sshd import SSHDaemon, public_key

LINES = "sh -c 'echo one; sleep 0.3; echo two'"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    """Three servers tagged pi on two sshd, one daphne on SQLite, set up through manage.py."""
    tmp = tmp_path_factory.mktemp("fleet")
    daemons = [
        SSHDaemon(workdir=tmp / f"sshd{i}", authorized_keys=[public_key(client_key)]).start()
        for i in range(2)
    ]
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'fleet.sqlite3'}",
        "DJANGO_SECRET_KEY": "fleet-tests-only",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    env.pop("REDIS_URL", None)
    key, _ = set_up(env, daemons[0], client_key, name="alpha")
    for name, daemon in (("beta", daemons[1]), ("gamma", daemons[0])):
        manage(env, "addserver", name, daemon.host, "--port", str(daemon.port),
               "--user", daemon.username)  # fmt: skip
        manage(env, "trusthost", name, "--yes")
    for name in ("alpha", "beta", "gamma"):
        manage(env, "tagserver", name, "--add", "pi")
    manage(env, "allowcommand", "t_lines", LINES)
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        server.start()
        yield server, key
    finally:
        server.stop()
        for daemon in daemons:
            daemon.stop()


def start_batch(stack, **body) -> int:
    server, key = stack
    status, _, started = call("POST", f"{server.base}/api/v1/batches/", key,
                                    {"command": LINES, "action_type": "t_lines", "tag": "pi",
                                     "wait": False, **body})  # fmt: skip
    assert status == 202, started
    return started["batch_id"]


def per_server(frames: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for frame in frames:
        if frame["type"] != "summary":
            found.setdefault(frame["server"], []).append(frame)
    return found


def test_the_stream_carries_each_targets_output_and_result_then_the_summary(stack):
    server, key = stack
    batch_id = start_batch(stack, max_concurrency=3)

    got = follow(f"{server.ws}/ws/v1/batches/{batch_id}/", key_headers(key))

    assert got.close_code == 1000
    assert got.frames[-1]["type"] == "summary"
    assert (got.frames[-1]["batch_id"], got.frames[-1]["status"]) == (batch_id, "succeeded")
    assert got.frames[-1]["counts"]["succeeded"] == 3 and "results" not in got.frames[-1]
    targets = per_server(got.frames[:-1])
    assert sorted(targets) == ["alpha", "beta", "gamma"]
    for name, frames in targets.items():
        output = [f for f in frames if f["type"] == "output"]
        results = [f for f in frames if f["type"] == "result"]
        assert "".join(f["data"] for f in output) == "one\ntwo\n", name
        assert len(results) == 1 and frames[-1] is results[0]  # its result ends its frames
        assert (results[0]["status"], results[0]["exit_code"]) == ("succeeded", 0)
        assert {f["execution_id"] for f in frames} == {results[0]["execution_id"]}


def test_a_late_subscriber_gets_everything_from_the_start_once_in_order(stack):
    server, key = stack
    batch_id = start_batch(stack, max_concurrency=1)
    live = follow(f"{server.ws}/ws/v1/batches/{batch_id}/", key_headers(key))

    late = follow(f"{server.ws}/ws/v1/batches/{batch_id}/", key_headers(key))

    assert late.frames == live.frames
    assert late.close_code == 1000
    # One target at a time: each target's frames come whole, in server-name order.
    order = [f["server"] for f in live.frames[:-1]]
    assert order == sorted(order)


def test_a_ticket_streams_a_batch_once(stack):
    server, key = stack
    batch_id = start_batch(stack)
    status, _, ticket = call("POST", f"{server.base}/api/v1/batches/{batch_id}/stream-ticket", key)
    assert status == 201 and ticket["url"].startswith(f"/ws/v1/batches/{batch_id}/?ticket=")

    first = follow(f"{server.ws}{ticket['url']}")
    again = follow(f"{server.ws}{ticket['url']}")

    assert first.frames[-1]["type"] == "summary" and first.close_code == 1000
    assert (again.frames, again.close_code) == ([], 4401)


def test_the_batch_socket_refuses_like_the_execution_socket(stack):
    server, key = stack
    assert follow(f"{server.ws}/ws/v1/batches/1/").close_code == 4401
    assert follow(f"{server.ws}/ws/v1/batches/99999/", key_headers(key)).close_code == 4404
    assert follow(f"{server.ws}/ws/v1/batches/abc/", key_headers(key)).close_code == 4404
