"""Slow and large clients against a real daphne: 200 connections that never finish their
body do not stop a normal request, and a 10 MB body is a JSON 413 `too_large`, refused by
Django from its Content-Length (never parsed) and audited for the caller."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

import pytest

from tests.live import Daphne, call, manage

SLOW_CLIENTS = 200
TEN_MB = 10 * 1024 * 1024


@pytest.fixture
def served(client_key, tmp_path):
    """(daphne, API key): the app on SQLite, served by one daphne process."""
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "large-clients",
        "DJANGO_DEBUG": "0",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    manage(env, "migrate", "--noinput")
    key = manage(env, "createapikey", "large").strip().splitlines()[-1]
    manage(env, "addserver", "box", "127.0.0.1", "--port", "9", "--user", "nobody")
    server = Daphne(env=env, log=tmp_path / "daphne.log").start()
    try:
        yield server, key
    finally:
        server.stop()


def head(server: Daphne, key: str, length: int) -> bytes:
    return (
        f"POST /api/v1/servers/box/commands/execute HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Api-Key {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode()


def test_200_stalled_bodies_do_not_stop_a_normal_request(served):
    server, key = served
    stalled: list[socket.socket] = []
    try:
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(head(server, key, 1000) + b'{"command": "upt')  # and then nothing
            stalled.append(sock)
        asked = time.monotonic()
        status, _, body = call("GET", f"{server.base}/api/v1/servers/", key)  # 90 s at most
        assert status == 200 and body["results"][0]["name"] == "box", body
        # Still open and waiting, not dropped to make room: one more byte is accepted.
        for sock in stalled[:10]:
            sock.sendall(b"i")
        status, _, _ = call("GET", f"{server.base}/api/v1/executions/", key)
        assert status == 200
        assert time.monotonic() - asked < 30  # bounded, with room for a noisy machine
    finally:
        for sock in stalled:
            sock.close()


def test_a_10_mb_body_is_refused_from_its_content_length(served):
    server, key = served
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.putrequest("POST", "/api/v1/servers/box/commands/execute")
        connection.putheader("Authorization", f"Api-Key {key}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(TEN_MB))
        connection.endheaders()
        chunk = b"x" * 65536
        for _ in range(TEN_MB // len(chunk)):
            connection.send(chunk)
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert status == 413 and body["code"] == "too_large", body
    status, _, listing = call("GET", f"{server.base}/api/v1/executions/?status=rejected", key)
    assert status == 200  # still serving
    assert [row["error_code"] for row in listing["results"]][:1] == ["too_large"]
