"""What the ASGI servers need changed for homelab, in one place: each patch says why it is
needed and how to tell when it can go. Applied by homelab/asgi.py; a patch whose server
is not the one running us (its modules are not imported) does nothing.

daphne (what `make run` serves) and uvicorn are both supported.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def stop_commands_when_daphne_stops() -> None:
    """On Ctrl-C or SIGTERM daphne waits for every request to end before it exits, and a
    request waiting for its command would hold it for as long as the command runs. So,
    first thing in its shutdown, drain and stop the running commands
    (commands/engine/runner.py); the waiting requests then end at once.

    Can go when daphne cancels in-flight requests on shutdown (it does not in 4.2; its
    Server.stop only stops listening), i.e. when tests/test_lifecycle.py passes without it.
    """
    reactor = sys.modules.get("twisted.internet.reactor")  # installed by daphne, if it runs us
    if reactor is None:
        return
    from twisted.internet import threads

    from commands.services import shutdown

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: threads.deferToThread(shutdown, server=True)
    )


def stop_commands_when_uvicorn_stops() -> None:
    """The same for uvicorn: its graceful shutdown first waits for in-flight requests (for
    up to --timeout-graceful-shutdown, by default for ever) and only then runs the ASGI
    lifespan shutdown, too late to stop the commands those requests wait for. So the
    signal handler itself starts stopping them, on a thread of its own.

    Can go when uvicorn offers a hook at the start of its shutdown (0.3x has none): drop
    it and rerun the uvicorn case of tests/test_lifecycle.py.
    """
    server_module = sys.modules.get("uvicorn.server")  # imported by uvicorn, if it runs us
    if server_module is None:
        return
    server_class = server_module.Server
    original = server_class.handle_exit
    if getattr(original, "homelab", False):
        return

    def handle_exit(self, sig, frame) -> None:
        from commands.services import shutdown

        threading.Thread(
            target=shutdown, kwargs={"server": True}, name="homelab-stop", daemon=True
        ).start()
        original(self, sig, frame)

    handle_exit.homelab = True
    server_class.handle_exit = handle_exit


def nodelay_on_uvicorns_inherited_sockets() -> None:
    """uvicorn --fd (a socket from a process manager or systemd) takes the inherited socket
    for a Unix one (socket.fromfd(fd, AF_UNIX, ...)), so asyncio never sets TCP_NODELAY on
    its TCP connections; an answer written as two pieces (headers, then body: every ASGI
    answer) then waits ~40 ms for the client's delayed ACK (Nagle's algorithm). Measured:
    a keep-alive 404 took 44 ms instead of 2 ms (docs/performance.md). Set it on each
    connection; on a real Unix socket the call fails and is ignored.

    Can go when uvicorn asks the kernel for the inherited socket's family
    (socket.socket(fileno=fd)); rerun bench/compare.py's uvicorn rows without it.
    """
    if "uvicorn.config" not in sys.modules:  # not run by uvicorn
        return
    import importlib

    for name, cls in (("httptools_impl", "HttpToolsProtocol"), ("h11_impl", "H11Protocol")):
        try:  # uvicorn imports its protocol after the app: import it first, to patch it
            protocol = getattr(importlib.import_module(f"uvicorn.protocols.http.{name}"), cls)
        except ImportError:  # that HTTP parser is not installed
            continue
        if getattr(protocol.connection_made, "homelab", False):
            continue
        original = protocol.connection_made

        def connection_made(self, transport, original=original) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):  # a real Unix socket: nothing to do
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            original(self, transport)

        connection_made.homelab = True
        protocol.connection_made = connection_made


# How long a client may take to read what is queued for it, then answer our close frame.
CLOSE_HANDSHAKE_SECONDS = 60


def let_slow_readers_finish() -> None:
    """A stream ends with its result frame and a close frame. daphne's WebSocket library
    (autobahn) aborts the TCP connection 1 s after that close unless the client has
    answered it, throwing away what is still queued, result included: a client reading a
    stream slower than it was produced lost its end (bench/stream.py, docs/performance.md).
    daphne has no option for that timeout, so it is set where daphne sets the others.

    Can go when daphne takes a close-handshake timeout option (not in 4.2), or when
    bench/stream.py's slow reader gets its result frame without it.
    """
    ws_protocol = sys.modules.get("daphne.ws_protocol")  # imported by daphne, if it runs us
    if ws_protocol is None:
        return
    factory = ws_protocol.WebSocketFactory
    original = factory.setProtocolOptions
    if getattr(original, "homelab", False):
        return

    def set_protocol_options(self, *args, **kwargs):
        kwargs.setdefault("closeHandshakeTimeout", CLOSE_HANDSHAKE_SECONDS)
        return original(self, *args, **kwargs)

    set_protocol_options.homelab = True
    factory.setProtocolOptions = set_protocol_options


def give_every_status_its_reason_phrase() -> None:
    """daphne writes twisted's reason phrase into the status line, and twisted's table
    lacks some codes the API answers with: a 429 went out as `429 Unknown Status`. Fill
    the gaps from the standard library's table (twisted's own phrases are kept).

    Can go when twisted.web.http.RESPONSES has 429 (it has not in twisted 26.10).
    """
    twisted_http = sys.modules.get("twisted.web.http")  # imported by daphne, if it runs us
    if twisted_http is None:
        return
    from http import HTTPStatus

    for status in HTTPStatus:
        twisted_http.RESPONSES.setdefault(status.value, status.phrase.encode("latin-1"))


def log_daphne_access_as_json() -> None:
    """With HOMELAB_LOG_FORMAT=json every log line is a JSON object, but daphne writes its
    access log (a line per request, to stdout) itself, in its own format. In JSON mode its
    lines go through logging instead (logger `daphne.access`, INFO, on stderr like the
    rest), formatted like every other line.

    Can go when daphne can hand its access log to a logger (it cannot in 4.2).
    """
    access = sys.modules.get("daphne.access")  # imported by daphne's CLI, if it runs us
    if access is None:
        return
    from django.conf import settings

    generator = access.AccessLogGenerator
    if settings.HOMELAB_LOG_FORMAT != "json" or getattr(generator.write_entry, "homelab", False):
        return
    import logging

    logger = logging.getLogger("daphne.access")

    def write_entry(self, host, date, request, status=None, length=None, ident=None, user=None):
        logger.info('%s "%s" %s %s', host, request, status or "-", length or "-")

    write_entry.homelab = True
    generator.write_entry = write_entry


def apply() -> None:
    stop_commands_when_daphne_stops()
    stop_commands_when_uvicorn_stops()
    nodelay_on_uvicorns_inherited_sockets()
    let_slow_readers_finish()
    give_every_status_its_reason_phrase()
    log_daphne_access_as_json()
