"""Issue 21, item 1: `stdout` and `stderr` are at most HOMELAB_OUTPUT_LIMIT bytes in UTF-8,
whatever the command prints, with nothing of ours in them; `*_cut_bytes` says how much was
left out, in the 200 body, GET executions/{id}/, the `result` frame and the audit row.

The contract is proven against a real daphne, sshd and WebSocket client; the property
test below tries the cap on any bytes a command could print.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.ssh import CappedOutput
from tests.live import Daphne, call, follow, key_headers, output_of
from tests.test_faults import RULES, set_up

CAP = 10240  # HOMELAB_OUTPUT_LIMIT's default
# 5 MB of "a" on stdout (the case); 300 kB of random bytes on stderr, most of which
# is not UTF-8 and so grows threefold as U+FFFD.
BIG = "sh -c 'head -c 5000000 /dev/zero | tr \"\\000\" a; head -c 300000 /dev/urandom >&2'"
BIG_RULE = ["t_big", BIG]


def decoded(data: bytes) -> str:
    return data.decode("utf-8", "replace").replace("\x00", "\ufffd")


@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=64),
            st.text(max_size=32).map(lambda text: text.encode("utf-8", "surrogatepass")),
        ),
        max_size=12,
    ),
    limit=st.integers(min_value=1, max_value=80),
)
def test_the_kept_text_never_exceeds_the_cap_in_utf8_whatever_the_bytes(chunks, limit):
    capped = CappedOutput(limit)
    for chunk in chunks:
        capped.feed(chunk)
    printed = b"".join(chunks)

    text = capped.text()
    assert len(text.encode("utf-8")) <= limit
    assert 0 <= capped.cut_bytes <= len(printed)
    assert capped.truncated is (capped.cut_bytes > 0)
    if capped.cut_bytes == 0:
        assert text == decoded(printed)  # nothing cut: all of it, exactly


@given(printed=st.text(alphabet="abc\n", max_size=300), limit=st.integers(1, 100))
def test_a_cut_keeps_the_first_and_the_last_bytes_and_nothing_else(printed, limit):
    capped = CappedOutput(limit)
    for start in range(0, len(printed), 7):
        capped.feed(printed[start : start + 7].encode())

    if len(printed) <= limit:
        assert (capped.text(), capped.cut_bytes) == (printed, 0)
    else:
        head, tail = limit - limit // 2, limit // 2
        assert capped.text() == printed[:head] + printed[len(printed) - tail :]
        assert capped.cut_bytes == len(printed) - limit


def test_a_cut_drops_a_split_character_and_counts_it():
    capped = CappedOutput(8)
    capped.feed("abc€def".encode())  # 9 bytes: the euro sign straddles the cut

    assert (capped.text(), capped.cut_bytes) == ("abcdef", 3)


def test_output_that_grows_as_replacement_characters_is_cut_to_the_cap_too():
    capped = CappedOutput(9)
    capped.feed(b"\xff" * 9)  # 9 bytes, within the cap, but 27 once each is U+FFFD

    assert capped.text() == "\ufffd" * 3
    assert (capped.truncated, capped.cut_bytes) == (True, 6)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, client_key):
    from tests.sshd import SSHDaemon, public_key

    tmp = tmp_path_factory.mktemp("cap")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp / 'cap.sqlite3'}",
        "DJANGO_SECRET_KEY": "cap-tests-only",
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    key, server_id = set_up(env, daemon, client_key, [*RULES, BIG_RULE])
    server = Daphne(env=env, log=tmp / "daphne.log")
    try:
        server.start()
        yield server, key, server_id, tmp / "cap.sqlite3"
    finally:
        server.stop()
        daemon.stop()


def stored(db_path, execution_id: int) -> dict:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        query = (
            "SELECT status, stdout, stderr, stdout_truncated, stderr_truncated, "
            "stdout_cut_bytes, stderr_cut_bytes FROM commands_execution WHERE id = ?"
        )
        return dict(db.execute(query, (execution_id,)).fetchone())


def assert_capped(fields: dict) -> None:
    """The issue's case: 5 MB of "a" and 300 kB of random bytes, each within the cap."""
    stdout, stderr = fields["stdout"], fields["stderr"]
    assert len(stdout.encode()) <= CAP and len(stderr.encode()) <= CAP, fields
    assert stdout == "a" * CAP  # its first and its last 5 KiB, nothing between them
    assert fields["stdout_cut_bytes"] == 5_000_000 - CAP
    assert bool(fields["stdout_truncated"]) and bool(fields["stderr_truncated"])
    # Random bytes: what is kept stands for fewer bytes than the cap, the rest is counted.
    assert 300_000 - CAP <= fields["stderr_cut_bytes"] < 300_000


def test_a_5_mb_output_answers_at_most_the_cap_with_the_cut_counted_everywhere(stack):
    server, key, server_id, db_path = stack
    url = f"{server.base}/api/v1/servers/{server_id}/commands/execute"

    status, _, body = call("POST", url, key, {"command": BIG, "action_type": "t_big"})
    assert status == 200, body
    assert body["exit_code"] == 0
    assert_capped(body)
    assert_capped(stored(db_path, body["execution_id"]))  # the audit row
    row_url = f"{server.base}/api/v1/executions/{body['execution_id']}/"
    status, _, shown = call("GET", row_url, key)
    assert status == 200
    assert_capped(shown)
    assert (shown["stdout"], shown["stderr"]) == (body["stdout"], body["stderr"])


def test_the_result_frame_carries_the_capped_output_and_the_cut(stack):
    server, key, server_id, db_path = stack
    url = f"{server.base}/api/v1/servers/{server_id}/commands/execute"
    status, _, body = call(
        "POST", url, key, {"command": BIG, "action_type": "t_big", "wait": False}
    )
    assert status == 202, body
    stream = f"{server.ws}/ws/v1/executions/{body['execution_id']}/"

    got = follow(stream, key_headers(key))
    assert got.close_code == 1000
    result = got.frames[-1]
    assert result["type"] == "result" and result["status"] == "succeeded"
    assert_capped(result)
    # The stream itself carries the first HOMELAB_STREAM_LIMIT bytes (1 MiB), then says so.
    assert output_of(got.frames) == "a" * 1024 * 1024
    assert {"type": "truncated", "execution_id": body["execution_id"], "stream": "stdout"} in (
        got.frames
    )
    row = stored(db_path, body["execution_id"])
    assert row["stdout"] == result["stdout"]
    assert row["stdout_cut_bytes"] == result["stdout_cut_bytes"]


def test_a_short_output_has_no_cut(stack):
    server, key, server_id, _ = stack
    url = f"{server.base}/api/v1/servers/{server_id}/commands/execute"

    status, _, body = call("POST", url, key, {"command": "echo short", "action_type": "t_echo"})
    assert status == 200, body
    assert (body["stdout"], body["stdout_cut_bytes"], body["stderr_cut_bytes"]) == (
        "short\n",
        0,
        0,
    )
    assert body["stdout_truncated"] is False
