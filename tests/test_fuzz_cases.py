"""Hand-written fuzz cases: what schemathesis cannot generate (issue 21, items 3 and 6).

schemathesis' UTF-8 codec drops lone surrogates, so hypothesis sends here every kind of
string a JSON parser accepts: lone surrogates (high, low, reversed pairs), noncharacters
(U+FFFE, U+FFFF, U+FDD0..U+FDEF, U+10FFFF), U+FFFD, NUL and other controls, a BOM,
astral characters, and strings far past every limit. They go, as values, keys and whole
bodies, to every write endpoint (WRITE_ENDPOINTS), with three keys (full, read-only,
limited to another server), to a server by id, by name and an unknown one, over HTTP and
the execute WebSocket, on SQLite and on PostgreSQL, each served by a real daphne with a
real sshd behind it. Every answer is JSON with its documented code, never a 5xx; a lone
surrogate in `command` or `action_type` is 400 `invalid` (close 4400), and the refusal is
audited with the text made safe (U+FFFD, as for NUL).

Also the query parameters the schema types as integers, `limit` and `offset`, with
values that are not (`?offset=null`, `?limit=null&offset=2.6e225`): 400, never a page.

`make test` runs HOMELAB_FUZZ_CASES (30) cases per test and database; `make fuzz` runs
HOMELAB_FUZZ_EXAMPLES (400).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from commands.models import storable
from tests.live import ROOT, Daphne
from tests.services import postgres_url
from tests.sshd import SSHDaemon, public_key

CASES = int(os.environ.get("HOMELAB_FUZZ_EXAMPLES") or os.environ.get("HOMELAB_FUZZ_CASES", "30"))
FUZZ = settings(
    max_examples=CASES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Every POST endpoint of the API, by its route name. A new one is one line here, e.g.
# "batch-list": "/api/v1/batches/"; the last test fails until it is added.
WRITE_ENDPOINTS = {
    "server-execute": "/api/v1/servers/{server}/commands/execute",
    "server-check": "/api/v1/servers/{server}/check",
    "execution-cancel": "/api/v1/executions/{execution}/cancel",
    "execution-stream-ticket": "/api/v1/executions/{execution}/stream-ticket",
    "batch-list": "/api/v1/batches/",
    "batch-cancel": "/api/v1/batches/{batch}/cancel",
    "batch-stream-ticket": "/api/v1/batches/{batch}/stream-ticket",
}
EXECUTE = WRITE_ENDPOINTS["server-execute"]
# The close code of the execute socket's refusals (4000 + the HTTP status).
CLOSE_FOR = {"invalid": 4400, "too_large": 4413, "key_scope": 4403, "not_whitelisted": 4400}
KEYS = ("full", "read_only", "elsewhere")


# --- every kind of string a JSON parser accepts ------------------------------------------
SURROGATES = st.characters(categories=["Cs"])
NONCHARACTERS = st.sampled_from(
    ["\ufffe", "\uffff", "\U0001fffe", "\U0010ffff", *map(chr, range(0xFDD0, 0xFDF0))]
)
ODD = st.sampled_from(["\ufffd", "\x00", "\ufeff", "\u2028", "\x7f", "\x1b", "\U0001f600", "é"])
ANY_CHARACTER = st.one_of(
    st.characters(codec=None, categories=None, exclude_categories=[]),  # surrogates too
    SURROGATES,
    NONCHARACTERS,
    ODD,
)
SHORT = st.text(alphabet=ANY_CHARACTER, max_size=24)
LONG = st.builds(lambda c, n: c * n, ANY_CHARACTER, st.sampled_from([1025, 70_000]))
STRINGS = st.one_of(SHORT, SHORT.map(lambda s: f"uptime{s}"), LONG, st.just("uptime"))
VALUES = st.one_of(STRINGS, st.integers(), st.booleans(), st.none(), st.lists(SHORT, max_size=3))
BODIES = st.one_of(
    st.fixed_dictionaries(
        {"command": STRINGS, "action_type": STRINGS},
        optional={
            "wait": VALUES,
            "servers": st.one_of(VALUES, st.lists(st.one_of(STRINGS, st.integers()), max_size=3)),
            "tag": VALUES,
            "max_concurrency": VALUES,
            "max_errors": VALUES,
        },
    ),
    st.dictionaries(STRINGS, VALUES, max_size=3),
    VALUES,
)


def has_surrogate(value: object) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def as_json(body: object) -> bytes:
    """The body as JSON text: \\uXXXX escapes carry lone surrogates (UTF-8 cannot)."""
    return json.dumps(body, ensure_ascii=True).encode()


def in_url(text: str) -> str:
    """text as one URL path segment, lone surrogates percent-encoded as their bytes."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="")


# --- one stack per database ------------------------------------------------------------
SET_UP = """
import io, json, sys
import django
django.setup()
from django.core.management import call_command
from commands.models import Server
spec = json.loads(sys.argv[1])
call_command("migrate", "--noinput", verbosity=0)
call_command("addserver", *spec["server"], stdout=io.StringIO())
call_command("trusthost", "box", "--yes", stdout=io.StringIO())
call_command("addserver", "other", "127.0.0.1", "--port", "9", stdout=io.StringIO())
keys = {}
for name, extra in [("full", []), ("read_only", ["--read-only"]),
                    ("elsewhere", ["--server", "other"])]:
    out = io.StringIO()
    call_command("createapikey", f"fuzz-{name}", *extra, stdout=out)
    keys[name] = out.getvalue().strip().splitlines()[-1]
print(json.dumps({"keys": keys, "server_id": Server.objects.get(name="box").pk}))
"""


@dataclass
class Stack:
    daphne: Daphne
    keys: dict[str, str]
    server_id: int
    execution_id: int
    batch_id: int
    database: str  # a sqlite path, or a PostgreSQL URL

    def latest_row(self) -> tuple:
        query = (
            "SELECT status, error_code, command, action_type, server_name "
            "FROM commands_execution ORDER BY id DESC LIMIT 1"
        )
        if self.database.startswith("postgres"):
            with psycopg.connect(self.database) as conn:
                return conn.execute(query).fetchone()
        with contextlib.closing(sqlite3.connect(self.database)) as conn:
            return conn.execute(query).fetchone()


@contextlib.contextmanager
def own_postgres_database():
    admin_url = postgres_url()
    name = f"homelab_fuzzcases_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {admin_url} is not answering ({exc}); see .ci/run.")
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory, client_key):
    tmp = tmp_path_factory.mktemp(f"fuzzcases-{request.param}")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(daemon.stop)
        if request.param == "postgresql":
            database = cleanup.enter_context(own_postgres_database())
        else:
            database = str(tmp / "fuzz.sqlite3")
        env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
        env |= {
            "DATABASE_URL": database if request.param == "postgresql" else f"sqlite:///{database}",
            "DJANGO_SECRET_KEY": "fuzz-cases-" + request.param,
            "DJANGO_DEBUG": "0",
            "HOMELAB_SSH_KEY_FILE": str(client_key),
            "HOMELAB_EXECUTE_RATE": "100000/min",
            "HOMELAB_CONNECT_TIMEOUT": "2",
        }
        spec = {"server": ["box", daemon.host, "--port", str(daemon.port),
                           "--user", daemon.username]}  # fmt: skip
        made = subprocess.run(
            [sys.executable, "-c", SET_UP, json.dumps(spec)],
            cwd=ROOT,
            env={**env, "DJANGO_SETTINGS_MODULE": "homelab.settings"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        setup = json.loads(made.stdout.strip().splitlines()[-1])
        app = Daphne(env=env, log=tmp / "daphne.log").start()
        cleanup.callback(app.stop)
        keys = setup["keys"]
        uptime = as_json({"command": "uptime", "action_type": "uptime"})
        path = EXECUTE.format(server=setup["server_id"])
        status, body = post(app, path, keys["full"], uptime)
        assert status == 200, body
        batch = as_json({"command": "uptime", "action_type": "uptime", "servers": ["box"]})
        status, made_batch = post(app, WRITE_ENDPOINTS["batch-list"], keys["full"], batch)
        assert status == 200 and made_batch["status"] == "succeeded", made_batch
        yield Stack(
            app, keys, setup["server_id"], body["execution_id"], made_batch["batch_id"], database
        )


def post(app: Daphne, path: str, key: str, data: bytes) -> tuple[int, object]:
    """(status, JSON body) of a POST; fails on anything that is not JSON."""
    request = urllib.request.Request(
        app.base + path,
        data=data,
        headers={"Content-Type": "application/json", "X-API-Key": key},
        method="POST",
    )
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        kind, raw = response.headers.get("Content-Type", ""), response.read()
    assert kind.startswith("application/json"), (response.status, kind, raw[:300])
    return response.status, json.loads(raw)


def get(app: Daphne, path: str, key: str) -> tuple[int, object]:
    request = urllib.request.Request(app.base + path, headers={"X-API-Key": key})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        return response.status, json.loads(response.read())


def expected_refusal(key: str, known_server: bool) -> tuple[int, str]:
    """What execute answers a body with a lone surrogate in command or action_type: the
    server is looked up first, except that a key limited to others never learns of it."""
    if not known_server and key != "elsewhere":
        return 404, "server_not_found"
    return 400, "invalid"


def assert_audited(stack: Stack, code: str, body: dict) -> None:
    """The newest row is the refusal, its text as sent but safe to store (U+FFFD); a
    request for an unknown server is refused before its body is read."""
    status, error_code, command, action_type, _ = stack.latest_row()
    assert (status, error_code) == ("rejected", code)
    if code == "server_not_found":
        assert (command, action_type) == ("", "")
        return
    for stored, field, size in ((command, "command", 1024), (action_type, "action_type", 64)):
        value = body.get(field)
        if isinstance(value, str):
            assert stored == storable(value[:size]), (field, stored)
            assert not has_surrogate(stored)


# --- the cases --------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["command", "action_type"])
@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("server", ["box", "nope"])
def test_a_lone_surrogate_is_400_invalid_and_audited_with_the_text_made_safe(
    stack, field, key, server
):
    body = {"command": "uptime", "action_type": "uptime", field: "up\ud800time\udfff"}

    status, answer = post(
        stack.daphne, EXECUTE.format(server=server), stack.keys[key], as_json(body)
    )

    assert (status, answer["code"]) == expected_refusal(key, server == "box"), answer
    assert_audited(stack, answer["code"], body)
    if answer["code"] == "invalid":
        assert stack.latest_row()[2 if field == "command" else 3] == "up\ufffdtime\ufffd"


@pytest.mark.parametrize("key", KEYS)
def test_a_lone_surrogate_on_the_execute_socket_closes_4400_with_an_invalid_frame(stack, key):
    url = f"{stack.daphne.ws}/ws/v1/servers/box/commands/execute"
    body = {"command": "echo \ud800", "action_type": "up\udc00"}

    with connect(url, additional_headers={"X-API-Key": stack.keys[key]}) as ws:
        ws.send(as_json(body).decode())
        frame = json.loads(ws.recv(timeout=30))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)

    assert (frame["type"], frame["code"]) == ("error", "invalid"), frame
    assert closed.value.rcvd.code == 4400
    assert_audited(stack, "invalid", body)


@FUZZ
@given(
    route=st.sampled_from(sorted(WRITE_ENDPOINTS)),
    key=st.sampled_from(KEYS),
    ref=st.one_of(st.sampled_from(["box", "nope", "{id}"]), SHORT),
    body=BODIES,
)
def test_any_json_string_to_any_write_endpoint_is_answered_in_json_never_a_5xx(
    stack, route, key, ref, body
):
    ref = str(stack.server_id) if ref == "{id}" else ref
    known = ref in ("box", "nope")
    execution = stack.execution_id if known else ref
    batch = stack.batch_id if known else ref
    path = WRITE_ENDPOINTS[route].format(
        server=in_url(ref), execution=in_url(str(execution)), batch=in_url(str(batch))
    )

    status, answer = post(stack.daphne, path, stack.keys[key], as_json(body))

    assert status < 500, (path, body, answer)
    if status >= 400:
        assert isinstance(answer["detail"], str) and isinstance(answer["code"], str), answer
    surrogate = isinstance(body, dict) and any(
        has_surrogate(body.get(field)) for field in ("command", "action_type")
    )
    if route == "server-execute" and surrogate and ref in ("box", "nope", str(stack.server_id)):
        assert (status, answer["code"]) == expected_refusal(key, ref != "nope"), answer
        assert_audited(stack, answer["code"], body)


@FUZZ
@given(key=st.sampled_from(KEYS), ref=st.sampled_from(["box", "nope"]), body=BODIES)
def test_any_json_string_on_the_execute_socket_is_a_frame_and_a_4xxx_close(stack, key, ref, body):
    url = f"{stack.daphne.ws}/ws/v1/servers/{ref}/commands/execute"
    text = as_json(body).decode()
    frames, code = [], None
    try:
        with connect(url, additional_headers={"X-API-Key": stack.keys[key]}) as ws:
            ws.send(text)
            while True:
                frames.append(json.loads(ws.recv(timeout=60)))
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None

    seen = (key, ref, len(text), frames[:2], code)
    assert code is not None and code != 1011, seen
    unknown = ref == "nope" and key != "elsewhere"  # refused at connect, before any frame
    if len(text.encode()) > 1024 * 1024:  # past daphne's message size: 1009, read no further
        assert frames == [] and code in ((1009, 4404) if unknown else (1009,)), seen
        return
    if unknown:
        assert (code, frames) == (4404, []), seen
        return
    first = frames[0]
    if first["type"] == "error":
        assert 4400 <= code < 4600 and code == CLOSE_FOR.get(first["code"], code), frames
    else:
        assert first["type"] == "started" and frames[-1]["type"] == "result" and code == 1000
    surrogate = isinstance(body, dict) and any(
        has_surrogate(body.get(field)) for field in ("command", "action_type")
    )
    if surrogate and len(as_json(body)) <= 65536:
        assert (first["code"], code) == ("invalid", 4400), frames
        assert_audited(stack, "invalid", body)


@pytest.mark.parametrize(
    "query",
    [
        "offset=null",
        "limit=null&offset=2.6e225",
        "limit=null",
        "offset=2.6e225",
        "limit=0",
        "limit=-1",
        "offset=-1",
        "limit=1.5",
        "offset=%D9%A1",
        "limit=%201",
        "limit=1_0",
    ],
)
@pytest.mark.parametrize("listing", ["servers", "executions"])
def test_a_limit_or_offset_that_is_not_a_whole_number_in_range_is_400(stack, listing, query):
    status, answer = get(stack.daphne, f"/api/v1/{listing}/?{query}", stack.keys["full"])

    assert (status, answer["code"]) == (400, "invalid"), answer
    named = {part.split("=")[0] for part in query.split("&")}
    assert set(answer["errors"]) <= {"limit", "offset"} and set(answer["errors"]) & named


def test_the_schema_gives_limit_and_offset_the_bounds_the_api_enforces(stack):
    status, schema = get(stack.daphne, "/api/schema/?format=json", stack.keys["full"])
    assert status == 200
    listing = schema["paths"]["/api/v1/executions/"]["get"]["parameters"]
    bounds = {p["name"]: p["schema"].get("minimum") for p in listing if p["in"] == "query"}
    assert (bounds["limit"], bounds["offset"]) == (1, 0)
    # In range, capped or empty (absent): a page.
    for query in ("limit=1&offset=0", "limit=500", "limit=&offset=", "offset=99999999999999999999"):
        status, page = get(stack.daphne, f"/api/v1/executions/?{query}", stack.keys["full"])
        assert status == 200 and "results" in page, (query, page)


def test_every_post_route_of_the_api_is_fuzzed_here():
    from commands.api.urls import router

    posted = {
        pattern.name
        for pattern in router.get_urls()
        if "post" in getattr(pattern.callback, "actions", {})
    }
    assert posted == set(WRITE_ENDPOINTS)
