"""The nginx snippet of docs/deployment.md, run as written in front of a real daphne.

nginx (Debian's; `scripts/ensure-nginx` installs it) runs in the foreground with a
config of its own in a temporary folder: the documented snippet inside a minimal `http`
block, with only the ports, the certificate (self-signed here) and the log folder
changed. daphne runs with the documented production environment. A client at another
loopback address (127.0.0.2) then talks to nginx only, over TLS, as a browser would.
"""

from __future__ import annotations

import datetime
import getpass
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live import COUNT, Daphne, manage, set_up
from tests.proxy import (
    ADMIN_PASSWORD,
    Answer,
    admin_login,
    audit_row,
    clean_env,
    doc_blocks,
    documented_env,
    follow_socket,
    send,
)
from tests.sshd import SSHDaemon, free_port, public_key, terminate, wait_for

NAME = "homelab.example"  # the server_name of the documented snippet
CLIENT = "127.0.0.2"  # the browser's address, as nginx sees it


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else ""
    )
    if not found:
        pytest.fail(
            "nginx not found: install it (Debian: apt-get install nginx) or run "
            "scripts/ensure-nginx, which does so as root."
        )
    return found


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for NAME and 127.0.0.1, and its key; the client trusts exactly it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    alt = [x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def nginx_conf(folder: Path, changes: dict[str, str]) -> str:
    """The documented snippet with `changes` made, in a minimal nginx.conf of folder's own."""
    [snippet] = doc_blocks("nginx")
    for old, new in changes.items():
        assert snippet.count(old) == 1, f"the nginx snippet in the docs no longer has {old!r}"
        snippet = snippet.replace(old, new)
    # As root, workers would run as `nobody` and could not use the test's private folder.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    temp = "".join(
        f"{kind}_temp_path {folder / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"daemon off;\n{user}\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\naccess_log {folder / 'access.log'};\n{temp}{snippet}}}\n"
    )


@dataclass
class Proxied:
    https_port: int
    http_port: int
    tls: ssl.SSLContext
    key: str
    server_id: int
    db_path: Path
    folder: Path

    def send(self, method, path, headers=None, body=None) -> Answer:
        """A request to nginx over TLS from CLIENT, for NAME."""
        headers = {"Host": NAME, **(headers or {})}
        return send(self.https_port, method, path, headers, body, source=CLIENT, tls=self.tls)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, client_key):
    binary = nginx_binary()
    tmp = tmp_path_factory.mktemp("nginx")
    daemon = SSHDaemon(workdir=tmp / "sshd", authorized_keys=[public_key(client_key)]).start()
    env = {
        **clean_env(),
        **documented_env(),
        "DJANGO_ALLOWED_HOSTS": f"{NAME},127.0.0.1",  # 127.0.0.1: the readiness probe
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "HOMELAB_SSH_KEY_FILE": str(client_key),
    }
    daphne = Daphne(env=env, log=tmp / "daphne.log")
    cert, cert_key = self_signed(tmp)
    https_port, http_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(
        nginx_conf(
            tmp,
            {
                "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
                "listen 80;": f"listen 127.0.0.1:{http_port};",
                f"/etc/letsencrypt/live/{NAME}/fullchain.pem": str(cert),
                f"/etc/letsencrypt/live/{NAME}/privkey.pem": str(cert_key),
                "/var/log/nginx/": f"{tmp}/",
                "http://127.0.0.1:8000": daphne.base,
            },
        )
    )
    command = [binary, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    nginx = None
    try:
        key, server_id = set_up(env, daemon, client_key)
        manage(
            {**env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
            *("createsuperuser", "--noinput", "--username", "admin", "--email", "a@x.example"),
        )
        daphne.start()
        with (tmp / "nginx.out").open("ab") as out:
            nginx = subprocess.Popen(command, stdout=out, stderr=out)
        assert wait_for(lambda: accepts(https_port) and accepts(http_port), timeout=20), (
            tmp / "error.log"
        ).read_text()
        tls = ssl.create_default_context(cafile=str(cert))
        yield Proxied(https_port, http_port, tls, key, server_id, tmp / "db.sqlite3", tmp)
    finally:
        if nginx is not None:
            terminate(nginx)
        daphne.stop()
        daemon.stop()


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def execute(proxied: Proxied, body: dict, headers: dict | None = None) -> Answer:
    path = f"/api/v1/servers/{proxied.server_id}/commands/execute"
    headers = {"X-API-Key": proxied.key, "Content-Type": "application/json", **(headers or {})}
    return proxied.send("POST", path, headers, body)


def test_an_api_call_through_nginx_runs_and_records_the_client_behind_it(proxied):
    forged = {"X-Forwarded-For": "198.51.100.7"}  # what a client writes itself never counts

    answer = execute(proxied, {"command": "echo hi", "action_type": "t_echo"}, forged)

    assert answer.status == 200, answer.body
    assert answer.json()["stdout"] == "hi\n"
    assert audit_row(proxied.db_path, answer.json()["execution_id"])["client_ip"] == CLIENT
    # Django saw the request as https (X-Forwarded-Proto), so it sends HSTS.
    assert answer.headers.get("Strict-Transport-Security", "").startswith("max-age=31536000")


def test_the_admin_login_works_through_nginx(proxied):
    def to_nginx(method, path, headers, body):
        return proxied.send(method, path, headers, body)

    page, posted, admin = admin_login(to_nginx, {})

    assert b"csrfmiddlewaretoken" in page.body
    assert posted.status == 302, posted.body[:500]
    assert posted.headers["Location"] == "/admin/"
    assert admin.status == 200 and b"Site administration" in admin.body
    assert posted.cookies()["sessionid"]["secure"]


def test_a_websocket_stream_works_through_nginx_and_its_ticket_stays_out_of_the_log(proxied):
    started = execute(proxied, {"command": COUNT, "action_type": "t_count", "wait": False})
    execution_id = started.json()["execution_id"]
    ticket = proxied.send(
        "POST", f"/api/v1/executions/{execution_id}/stream-ticket", {"X-API-Key": proxied.key}
    ).json()
    connection = socket.create_connection(
        ("127.0.0.1", proxied.https_port), source_address=(CLIENT, 0)
    )

    frames, code = follow_socket(
        f"wss://{NAME}:{proxied.https_port}{ticket['url']}", sock=connection, ssl=proxied.tls
    )

    output = "".join(f["data"] for f in frames if f["type"] == "output")
    assert (output, frames[-1]["type"], frames[-1]["status"]) == (
        "1\n2\n3\n",
        "result",
        "succeeded",
    )
    assert code == 1000
    log = (proxied.folder / "homelab.access.log").read_text()
    assert f"/ws/v1/executions/{execution_id}/" in log
    assert ticket["ticket"] not in log


def test_plain_http_is_redirected_to_https(proxied):
    answer = send(proxied.http_port, "GET", "/admin/?x=1", {"Host": NAME}, source=CLIENT)

    assert answer.status == 301
    assert answer.headers["Location"] == f"https://{NAME}/admin/?x=1"
