"""The execute short path (commands/api/fastpath.py) answers as Django's view does: the same
requests through two real daphne processes on one database, one with the short path and one
without (HOMELAB_FAST_EXECUTE=0), get the same status, body and headers. And the short path
really answers them: in process, with Django's application replaced by one that fails."""

from __future__ import annotations

import asyncio
import http.client
import json
import os

import pytest

from tests.live import Daphne, manage, set_up
from tests.sshd import processes_matching

FORM = "application/x-www-form-urlencoded"
VOLATILE = {"execution_id", "duration_ms", "url", "stream"}  # differ from run to run
VOLATILE_HEADERS = {
    "date",
    "server",
    "connection",
    "location",
    "x-ratelimit-reset",
    "content-length",
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, client_key, sshd_module):
    """(fast daphne, Django daphne, keys by name) on one SQLite database."""
    tmp = tmp_path_factory.mktemp("fastpath")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'fast.sqlite3'}",
        "DJANGO_SECRET_KEY": "fastpath-tests-only",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
        "HOMELAB_EXECUTE_RATE": "1000/min",
    }
    env.pop("REDIS_URL", None)
    set_up(env, sshd_module, client_key)
    manage(env, "allowcommand", "t_fail", "sh -c 'echo out; echo err >&2; exit 3'")
    manage(env, "allowcommand", "t_slow", "sleep {s}", "--param", r"s=^[0-9]{1,2}$",
           "--timeout", "1")  # fmt: skip
    manage(env, "addserver", "off", sshd_module.host, "--port", str(sshd_module.port),
           "--user", sshd_module.username)  # fmt: skip
    manage(env, "trusthost", "off", "--yes")
    manage(env, "addserver", "unpinned", sshd_module.host, "--port", str(sshd_module.port),
           "--user", sshd_module.username)  # fmt: skip
    make_keys = (
        "from commands.models import ApiKey, Server\n"
        "Server.objects.filter(name='off').update(enabled=False)\n"
        "for name, extra in [('ro', {'read_only': True}), ('slow1', {'rate': '1/min'}),"
        " ('slow2', {'rate': '1/min'}), ('main', {})]:\n"
        "    _, raw = ApiKey.objects.create_key(name=name, **extra)\n"
        "    print('key', name, raw)\n"
    )
    printed = manage(env, "shell", "-c", make_keys).splitlines()
    keys = dict(line.split()[1:] for line in printed if line.startswith("key "))
    fast = Daphne(env=env, log=tmp / "fast.log").start()
    plain = Daphne(env={**env, "HOMELAB_FAST_EXECUTE": "0"}, log=tmp / "plain.log").start()
    try:
        yield fast, plain, keys
    finally:
        fast.stop()
        plain.stop()


@pytest.fixture(scope="module")
def sshd_module(tmp_path_factory, client_key):
    from tests.sshd import SSHDaemon, public_key

    daemon = SSHDaemon(
        workdir=tmp_path_factory.mktemp("sshd"), authorized_keys=[public_key(client_key)]
    ).start()
    yield daemon
    daemon.stop()


def send(server: Daphne, key: str | None, body: bytes, ref: str = "box", **headers: str):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    sent = {"Content-Type": "application/json", **headers}
    if key is not None:
        sent["Authorization"] = f"Api-Key {key}"
    conn.request("POST", f"/api/v1/servers/{ref}/commands/execute", body=body, headers=sent)
    response = conn.getresponse()
    content = response.read()
    conn.close()
    answer = {k.lower(): v for k, v in response.getheaders() if k.lower() not in VOLATILE_HEADERS}
    return response.status, answer, content


def normalized(content: bytes):
    body = json.loads(content)
    return {k: v for k, v in body.items() if k not in VOLATILE} if isinstance(body, dict) else body


def body(**fields) -> bytes:
    return json.dumps({"command": "echo hi", "action_type": "t_echo", **fields}).encode()


CASES = {
    "ran": ("main", body(), "box", {}),
    "exit 3": ("main", body(command="sh -c 'echo out; echo err >&2; exit 3'",
                            action_type="t_fail"), "box", {}),
    "started": ("main", body(wait=False), "box", {}),
    "not whitelisted": ("main", body(action_type="t_none"), "box", {}),
    "bad parameter": ("main", body(command="echo HI"), "box", {}),
    "blank fields": ("main", body(command="", action_type=""), "box", {}),
    "not json": ("main", b"{bad", "box", {}),
    "not an object": ("main", b"[1, 2]", "box", {}),
    "empty": ("main", b"", "box", {}),
    "NaN": ("main", b'{"command": NaN, "action_type": "t_echo"}', "box", {}),
    "nested": ("main", b"[" * 100_000 + b"]" * 100_000, "box", {}),
    "too large": ("main", b'{"command": "' + b"x" * 3_000_000 + b'"}', "box", {}),
    "bad utf-8": ("main", b'{"command": "\xff", "action_type": "t_echo"}', "box", {}),
    "surrogate": ("main", b'{"command": "echo \\ud800", "action_type": "t_echo"}', "box", {}),
    "unknown server": ("main", body(), "nope", {}),
    "no key": (None, body(), "box", {}),
    "bad key": ("bogus.key", body(), "box", {}),
    "read-only key": ("ro", body(), "box", {}),
    "disabled": ("main", body(), "off", {}),
    "unpinned": ("main", body(), "unpinned", {}),
    "timeout": ("main", body(command="sleep 5", action_type="t_slow"), "box", {}),
    "charset": ("main", body(), "box", {"Content-Type": "application/json; charset=utf-8"}),
    "a form": ("main", b"command=uptime", "box", {"Content-Type": FORM}),
    "origin": ("main", body(), "box", {"Origin": "http://elsewhere.example"}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_the_short_path_answers_as_the_view_does(pair, case):
    fast, plain, keys = pair
    key_name, content, ref, headers = CASES[case]
    key = keys.get(key_name, key_name) if key_name else None

    got = send(fast, key, content, ref, **headers)
    want = send(plain, key, content, ref, **headers)

    assert (got[0], normalized(got[2])) == (want[0], normalized(want[2]))
    assert got[1] == want[1]
    assert not processes_matching("sleep 5")


def test_a_throttled_key_gets_the_same_429_and_quota_headers(pair):
    fast, plain, keys = pair
    for server, key in ((fast, keys["slow1"]), (plain, keys["slow2"])):
        assert send(server, key, body())[0] == 200
    got = send(fast, keys["slow1"], body())
    want = send(plain, keys["slow2"], body())
    assert got[0] == want[0] == 429
    assert normalized(got[2])["code"] == "throttled"
    assert got[1] == want[1] and "retry-after" in got[1] and "x-ratelimit-limit" in got[1]


@pytest.mark.django_db(transaction=True)  # the pool thread has its own connection
def test_the_short_path_answers_without_django(api_key, sshd, make_server, make_rule, settings):
    """In process: FastExecute in front of an application that fails if it is ever called."""
    from commands.api.fastpath import FastExecute

    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    make_server(sshd, name="box")
    make_rule("t_echo", "echo {word}", word="^[a-z]{1,10}$")

    async def django(scope, receive, send):
        raise AssertionError("the request went to Django")

    async def run(headers: list) -> tuple[int, bytes]:
        sent = []

        async def receive():
            return {"type": "http.request", "body": body(), "more_body": False}

        async def collect(message):
            sent.append(message)

        path = "/api/v1/servers/box/commands/execute"
        scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
                 "headers": headers, "client": ("127.0.0.1", 5000)}  # fmt: skip
        await FastExecute(django)(scope, receive, collect)
        return sent[0]["status"], sent[1]["body"]

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"x-api-key", api_key[1].encode())]  # fmt: skip
    status, content = asyncio.run(run(headers))
    assert (status, json.loads(content)["stdout"]) == (200, "hi\n")
    with pytest.raises(AssertionError, match="went to Django"):  # a browser's goes to Django
        asyncio.run(run([*headers, (b"cookie", b"sessionid=x")]))
