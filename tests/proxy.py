"""Helpers for the CORS and reverse-proxy tests: the documented configuration, raw HTTP
requests with the headers a proxy or a browser sends, an admin login, a WebSocket reader.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "deployment.md"
FRONTEND = "http://localhost:5173"  # a Vite dev server
SITE = "https://homelab.example"  # the name the documented proxy serves
ADMIN_PASSWORD = "proxy-admin-" + secrets.token_hex(8)


def doc_blocks(language: str) -> list[str]:
    """The fenced code blocks of docs/deployment.md in that language."""
    return re.findall(rf"^```{language}\n(.*?)^```$", DOCS.read_text(), flags=re.M | re.S)


def documented_env() -> dict[str, str]:
    """The production environment docs/deployment.md gives, with a real secret key."""
    [block] = [b for b in doc_blocks("sh") if "HOMELAB_BEHIND_TLS_PROXY=" in b]
    lines = [line for line in block.splitlines() if line and not line.startswith("#")]
    env = dict(line.split("=", 1) for line in lines)
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    return env


def clean_env() -> dict[str, str]:
    """This process's environment without any homelab setting that could leak in."""
    prefixes = ("DJANGO_", "HOMELAB_", "DATABASE_URL", "REDIS_URL")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    def cookies(self) -> SimpleCookie:
        jar = SimpleCookie()
        for line in self.headers.get_all("Set-Cookie") or []:
            jar.load(line)
        return jar

    def cors_headers(self) -> list[str]:
        return [name for name in self.headers if name.lower().startswith("access-control-")]


def send(
    port: int,
    method: str,
    path: str,
    headers: dict | None = None,
    body=None,
    *,
    source: str = "127.0.0.1",
    tls=None,
) -> Answer:
    """One HTTP request to 127.0.0.1:port from `source`; a Host header given is sent as is."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90, source_address=(source, 0))
    else:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=90, source_address=(source, 0), context=tls
        )
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        conn.close()


def admin_login(send_to, headers: dict, password: str = ADMIN_PASSWORD) -> list[Answer]:
    """A browser's admin login at SITE: the login page, the POST of its form, then GET
    /admin/ with the session cookie that POST set (if any).

    send_to(method, path, headers, body) reaches the app; `headers` go with every request
    besides the browser's own (what a proxy adds; through a real proxy, only Host)."""
    page = send_to("GET", "/admin/login/?next=/admin/", headers, None)
    assert page.status == 200, page.body[:500]
    csrf_cookie = page.cookies()["csrftoken"]
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body).group(1)
    form = {
        "csrfmiddlewaretoken": token.decode(),
        "username": "admin",
        "password": password,
        "next": "/admin/",
    }
    posted = send_to(
        "POST",
        "/admin/login/?next=/admin/",
        {
            **headers,
            "Cookie": f"csrftoken={csrf_cookie.value}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": SITE,
            "Referer": f"{SITE}/admin/login/?next=/admin/",
        },
        urlencode(form),
    )
    session = posted.cookies().get("sessionid")
    cookie = f"sessionid={session.value}" if session else ""
    return [page, posted, send_to("GET", "/admin/", {**headers, "Cookie": cookie}, None)]


def follow_socket(url: str, **connect_options) -> tuple[list[dict], int | None]:
    """A WebSocket's frames until the server closes it, and the close code."""
    frames, code = [], None
    with connect(url, open_timeout=10, **connect_options) as socket_:
        try:
            while True:
                frames.append(json.loads(socket_.recv(timeout=60)))
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    return frames, code


def audit_row(db_path: Path, execution_id: int) -> dict:
    with sqlite3.connect(db_path) as db:
        db.row_factory = sqlite3.Row
        found = db.execute("SELECT * FROM commands_execution WHERE id = ?", (execution_id,))
        return dict(found.fetchone())
