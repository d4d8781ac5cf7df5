"""Live executions through the API in-process (Django's test client, a real sshd): wait=false,
the bounded runner's 503, cancel rules, and the output a stream and a row keep."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import tracemalloc

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from commands import ssh
from commands.engine import framelog as live
from commands.engine import runner
from commands.engine.output import LiveOutput
from commands.models import ApiKey, Execution
from commands.requests import Caller
from tests.sshd import processes_matching, wait_for

pytestmark = pytest.mark.django_db(transaction=True)  # runner threads write the rows


@pytest.fixture
def server(sshd, make_server, make_rule):
    make_rule("t_nap", "sleep {s}", timeout=60, s=r"^[0-9]{1,3}\.[0-9]{1,12}$")
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")
    return make_server(sshd)


def execute(client, server, command, action_type, **extra):
    return client.post(
        f"/api/v1/servers/{server.pk}/commands/execute",
        {"command": command, "action_type": action_type, **extra},
        format="json",
    )


def key_client(name: str) -> tuple[APIClient, ApiKey]:
    key, raw = ApiKey.objects.create_key(name=name)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw}")
    return client, key


def wait_until_finished(execution_id: int, timeout: float = 15) -> Execution:
    wait_for(lambda: Execution.objects.get(pk=execution_id).status != "running", timeout=timeout)
    return Execution.objects.get(pk=execution_id)


def test_wait_false_answers_202_with_location_and_the_row_completes(api_client, server):
    response = execute(api_client, server, "echo hi", "t_echo", wait=False)

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "running"
    assert response["Location"] == f"/api/v1/executions/{body['execution_id']}/"
    assert body["stream"] == f"/ws/v1/executions/{body['execution_id']}/"
    done = wait_until_finished(body["execution_id"])
    assert (done.status, done.stdout, done.exit_code) == ("succeeded", "hi\n", 0)


def test_wait_false_goes_through_the_same_whitelist_and_errors(api_client, server):
    response = execute(api_client, server, "echo hi; reboot", "t_echo", wait=False)

    assert response.status_code == 400
    assert response.json()["code"] in {"invalid_parameter", "not_whitelisted"}
    assert Execution.objects.get(pk=response.json()["execution_id"]).status == "rejected"


def test_past_the_bound_a_request_gets_503_busy_with_retry_after(api_client, server, settings):
    settings.HOMELAB_MAX_RUNNING = 1
    settings.HOMELAB_BUSY_WAIT_SECONDS = 0
    first = execute(api_client, server, "sleep 30.123456789", "t_nap", wait=False)
    assert first.status_code == 202

    refused = execute(api_client, server, "echo hi", "t_echo")

    assert refused.status_code == 503
    assert refused.json()["code"] == "busy"
    assert int(refused["Retry-After"]) >= 1
    audit = Execution.objects.get(pk=refused.json()["execution_id"])
    assert (audit.status, audit.error_code) == ("rejected", "busy")
    cancelled = api_client.post(f"/api/v1/executions/{first.json()['execution_id']}/cancel")
    assert cancelled.json()["status"] == "cancelled"


def test_a_waiting_caller_whose_command_is_cancelled_gets_409_cancelled(api_client, server):
    marker = "45.987654321"
    answer = {}
    caller = threading.Thread(
        target=lambda: answer.update(r=execute(api_client, server, f"sleep {marker}", "t_nap"))
    )
    caller.start()
    assert wait_for(lambda: processes_matching(marker), timeout=10)
    running = Execution.objects.get(status="running")

    cancel = api_client.post(f"/api/v1/executions/{running.pk}/cancel")
    caller.join(timeout=10)

    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    body = answer["r"].json()
    assert (answer["r"].status_code, body["code"]) == (409, "cancelled")
    assert body["execution_id"] == running.pk
    assert not processes_matching(marker)


def test_only_the_starter_or_a_user_with_the_permission_may_cancel(
    api_client, server, django_user_model
):
    started = execute(api_client, server, "sleep 30.555555", "t_nap", wait=False).json()
    url = f"/api/v1/executions/{started['execution_id']}/cancel"
    stranger, _ = key_client("stranger")
    allowed_owner = django_user_model.objects.create_user("ops")
    allowed_owner.user_permissions.add(Permission.objects.get(codename="execute_command"))
    permitted, key = key_client("ops-key")
    ApiKey.objects.filter(pk=key.pk).update(owner=allowed_owner)

    refused = stranger.post(url)
    accepted = permitted.post(url)

    assert (refused.status_code, refused.json()["code"]) == (403, "permission_denied")
    assert accepted.status_code == 200 and accepted.json()["status"] == "cancelled"


def test_cancelling_a_finished_execution_is_409_not_running(api_client, server):
    done = execute(api_client, server, "echo hi", "t_echo").json()

    response = api_client.post(f"/api/v1/executions/{done['execution_id']}/cancel")

    assert response.status_code == 409
    assert response.json()["code"] == "not_running"


def test_an_unknown_execution_cannot_be_cancelled_or_ticketed(api_client):
    assert api_client.post("/api/v1/executions/99999/cancel").status_code == 404
    assert api_client.post("/api/v1/executions/99999/stream-ticket").status_code == 404


# --- the output a stream carries and a row keeps ------------------------------------------
def frames_of(execution_id: int) -> list[str]:
    return [frame.text for frame in live.backend().read(live.execution_log(execution_id), 0) or []]


def test_the_stream_stops_at_the_stream_limit_with_one_truncated_frame(db):
    live.backend().start(live.execution_log(7001), ttl=60)
    output = LiveOutput(7001, stream_limit=10, output_limit=100)
    output("stdout", "héllo ".encode())  # 7 bytes
    output("stdout", b"world, and more")
    output("stdout", b"still more")
    output("stderr", b"err")
    output.flush()

    frames = [json.loads(f) for f in frames_of(7001)]
    assert frames == [
        {"type": "output", "execution_id": 7001, "stream": "stdout", "data": "héllo "},
        {"type": "output", "execution_id": 7001, "stream": "stdout", "data": "wor"},
        {"type": "truncated", "execution_id": 7001, "stream": "stdout"},
        {"type": "output", "execution_id": 7001, "stream": "stderr", "data": "err"},
    ]
    assert output.snapshot()["stdout"] == "héllo world, and morestill more"


def test_a_character_split_between_chunks_is_streamed_whole(db):
    live.backend().start(live.execution_log(7002), ttl=60)
    output = LiveOutput(7002, stream_limit=100, output_limit=100)
    output("stdout", b"\xe2\x82")
    output("stdout", b"\xac!\x00")
    output.flush()

    data = "".join(json.loads(f)["data"] for f in frames_of(7002))
    assert data == "€!\ufffd"  # and NUL, which PostgreSQL refuses, is U+FFFD


def test_a_row_keeps_the_beginning_and_the_end_of_a_long_output():
    capped = ssh.CappedOutput(10)
    for chunk in (b"BEGIN", b"-middle-" * 1000, b"...END"):
        capped.feed(chunk)

    assert capped.truncated
    # Nothing of ours in the data: the cut is counted in cut_bytes.
    assert (capped.text(), capped.cut_bytes) == ("BEGIN..END", 8001)


def test_output_within_the_limit_is_kept_whole():
    capped = ssh.CappedOutput(10)
    for chunk in (b"0123", b"4567", b"89"):
        capped.feed(chunk)

    assert (capped.truncated, capped.text(), capped.cut_bytes) == (False, "0123456789", 0)


def test_memory_stays_bounded_whatever_is_fed():
    capped = ssh.CappedOutput(1024)
    for _ in range(10_000):
        capped.feed(b"x" * 4096)
    assert len(capped._head) + len(capped._tail) == 1024
    assert capped.total == 40_960_000


def test_the_runner_bounds_concurrency_and_frees_slots():
    bounded = runner.Runner(max_running=2, busy_wait=0, drain_seconds=0)
    release = threading.Event()
    bounded.reserve()
    bounded.submit(1, lambda run: release.wait(5))
    bounded.reserve()
    bounded.submit(2, lambda run: release.wait(5))
    with pytest.raises(Exception) as refused:
        bounded.reserve()
    assert refused.value.code == "busy"
    release.set()
    assert bounded.wait_idle(5)
    bounded.reserve()  # a slot is free again
    bounded.release()
    started = time.monotonic()
    bounded.shutdown(grace=1)
    assert time.monotonic() - started < 1


# --- who may watch: the session path (the key and ticket paths run against daphne) -------
def authorize(user, execution_id: int, origin: bytes | None = b"http://127.0.0.1:8000"):
    from asgiref.sync import async_to_sync

    from commands.live.streaming import authorize as check

    headers = [(b"host", b"127.0.0.1:8000")] + ([(b"origin", origin)] if origin else [])
    scope = {"headers": headers, "user": user, "query_string": b""}
    return async_to_sync(check)(scope, str(execution_id))


def test_a_staff_session_may_watch_from_our_own_pages_only(admin_user):
    execution = Execution.objects.create(server_name="nas", action_type="t", command="c")

    assert authorize(admin_user, execution.pk) is None
    assert authorize(admin_user, execution.pk, origin=None) is None  # not a browser
    assert authorize(admin_user, execution.pk, origin=b"https://evil.example") == 4401
    assert authorize(admin_user, 424242) == 4404


def test_a_logged_in_user_who_is_not_staff_is_refused_4403(django_user_model):
    user = django_user_model.objects.create_user("guest")
    execution = Execution.objects.create(server_name="nas", action_type="t", command="c")

    assert authorize(user, execution.pk) == 4403


def test_the_one_connection_execute_shares_the_per_key_quota(server, api_key, monkeypatch):
    from commands.live import sockets
    from commands.quota import ExecuteRateThrottle

    monkeypatch.setattr(ExecuteRateThrottle, "THROTTLE_RATES", {"command-execute": "1/min"})
    who = Caller(api_key[0], api_key[0].owner, "127.0.0.1")
    message = json.dumps({"command": "echo hi", "action_type": "t_echo"})

    first = sockets.start_execution(who, str(server.pk), message)
    second = sockets.start_execution(who, str(server.pk), message)

    assert isinstance(first, int)
    assert isinstance(second, sockets.Refusal) and second.close_code == 4429
    assert second.frame["code"] == "throttled" and second.frame["retry_after"] >= 1
    assert Execution.objects.filter(status="rejected", error_code="throttled").count() == 1
    assert wait_until_finished(first).status == "succeeded"


def test_an_oversized_first_frame_is_refused_before_parsing(server, api_key):
    from commands.live import sockets

    who = Caller(api_key[0], None, "127.0.0.1")

    refused = sockets.start_execution(who, str(server.pk), "x" * (sockets.MAX_MESSAGE + 1))

    assert (refused.close_code, refused.frame["code"]) == (4413, "too_large")


def test_an_execute_socket_that_sends_nothing_is_closed_4408(server, api_key, monkeypatch):
    from asgiref.sync import async_to_sync
    from channels.testing import WebsocketCommunicator

    from commands.live import consumers
    from homelab.asgi import application

    monkeypatch.setattr(consumers, "FIRST_FRAME_SECONDS", 0.2)

    async def silent_client():
        socket = WebsocketCommunicator(
            application,
            f"/ws/v1/servers/{server.pk}/commands/execute",
            headers=[(b"authorization", f"Api-Key {api_key[1]}".encode())],
        )
        connected, _ = await socket.connect()
        frame = await socket.receive_json_from(timeout=5)
        closed = await socket.receive_output(timeout=5)
        await socket.disconnect()
        return connected, frame, closed

    connected, frame, closed = async_to_sync(silent_client)()

    assert connected and (frame["type"], frame["code"]) == ("error", "timeout")
    assert (closed["type"], closed["code"]) == ("websocket.close", 4408)


def test_a_run_in_another_process_out_of_reach_is_a_503_naming_the_fix(api_client, api_key):
    import subprocess

    from commands.engine.runner import identity_of

    other = subprocess.Popen(["sleep", "30"])
    try:
        runner_id = identity_of(other.pid)
        execution = Execution.objects.create(
            server_name="nas", action_type="t", command="c", api_key=api_key[0], runner=runner_id
        )
        response = api_client.post(f"/api/v1/executions/{execution.pk}/cancel")
    finally:
        other.kill()
        other.wait()

    assert (response.status_code, response.json()["code"]) == (503, "unavailable")
    assert "REDIS_URL" in response.json()["detail"]


def test_a_run_whose_process_is_gone_is_closed_and_409(api_client, api_key):
    gone = runner.identity_of(999_999_999)  # no such PID on this host
    execution = Execution.objects.create(
        server_name="nas", action_type="t", command="c", api_key=api_key[0], runner=gone
    )

    response = api_client.post(f"/api/v1/executions/{execution.pk}/cancel")

    assert (response.status_code, response.json()["code"]) == (409, "not_running")
    assert Execution.objects.get(pk=execution.pk).status == "interrupted"


@pytest.mark.parametrize(
    "piece",
    [os.urandom(32 * 1024), b"a" * 32 * 1024, b"\x01" * 32 * 1024, "😀".encode() * 8192],
    ids=["random", "text", "control", "astral"],
)
def test_a_streams_log_holds_at_most_its_limit_whatever_the_bytes(db, piece):
    limit = 256 * 1024
    log = live.execution_log(7003)
    live.backend().start(log, ttl=60)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        output = LiveOutput(7003, stream_limit=limit, output_limit=1024)
        for _ in range(640):  # 20 MB, far past the limit
            output("stdout", piece)
        output.flush()
        del output
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    frames = live.backend().read(log, 0)
    assert [json.loads(f.data)["type"] for f in frames][-1] == "truncated"
    data = sum(
        len(json.dumps(f.fields["data"], ensure_ascii=False).encode()) - 2 for f in frames[:-1]
    )
    assert limit - 6 < data <= limit  # the limit counts the data as sent (an escape: <= 6)
    # Kept as UTF-8 JSON, once: about the limit, however the text is decoded or escaped
    # (a str of astral text takes 4 bytes a character; fields and JSON were two copies).
    assert held < 1.3 * limit, held
