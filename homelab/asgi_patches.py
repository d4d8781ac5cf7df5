"""What the ASGI servers need changed for homelab, in one place: each patch says why it is
needed and how to tell when it can go. Applied by homelab/asgi.py; a patch whose server
is not the one running us (its modules are not imported) does nothing.

daphne (what `make run` serves) and uvicorn are both supported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
from http import HTTPStatus

logger = logging.getLogger("homelab.asgi")


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
    it and rerun tests/test_uvicorn.py.
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
    (socket.socket(fileno=fd)); tests/test_uvicorn.py reads the option back.
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

    Also `failByDrop=False`: a message over daphne's size limit (1 MiB) dropped the TCP
    connection with no close frame; now the client gets close code 1009 ("message too
    big") first, and any other protocol error its close code too.

    Can go when daphne takes a close-handshake timeout option (not in 4.2), or when
    bench/stream.py's slow reader gets its result frame without it; the failByDrop part
    when daphne sets it (tests/test_edges.py's 2 MB frame gets 1009 without it).
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
        kwargs.setdefault("failByDrop", False)
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


def answer_oversized_requests() -> None:
    """twisted reads a request line or a header line of at most 16 KiB, and at most 16 KiB
    of both together: past the first it closed the connection with no answer at all, past
    the second it answered a bare 400. Now a request line too long is 414 and headers too
    large 431, with the API's JSON error body, then the connection closes.

    Can go when twisted.web answers these itself (26.10 does not): a 32 KB URL or header
    in tests/test_edges.py then gets 414 / 431 without it.
    """
    twisted_http = sys.modules.get("twisted.web.http")  # imported by daphne, if it runs us
    if twisted_http is None:
        return
    channel = twisted_http.HTTPChannel
    if getattr(channel.lineReceived, "homelab", False):
        return
    original_line = channel.lineReceived

    def line_length_exceeded(self, line) -> None:
        _refuse_oversized(self)

    def line_received(self, line) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            _refuse_oversized(self)
            return
        original_line(self, line)

    line_received.homelab = True
    channel.lineLengthExceeded = line_length_exceeded
    channel.lineReceived = line_received


OVERSIZED = {
    # (status, code, detail): the request line, then the headers, past twisted's 16 KiB
    True: (414, "uri_too_long", "The request line (the URL) is over 16 KiB."),
    False: (431, "headers_too_large", "The request's headers are over 16 KiB in all."),
}


def _refuse_oversized(channel) -> None:
    """Answer 414 (still on the request line) or 431 (in the headers) and hang up."""
    status, code, detail = OVERSIZED[bool(channel._HTTPChannel__first_line)]
    body = json.dumps({"detail": detail, "code": code}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    # Read no more of it (the rest of the line is dropped), answer, then close.
    channel.dataReceived = lambda data: None
    channel.transport.write(head.encode() + body)
    channel.transport.loseConnection()


DENIAL = "websocket.http.response"  # the ASGI extension: an HTTP answer to a handshake


def answer_unknown_websocket_paths_with_404() -> None:
    """An unknown WebSocket path reached Channels' router, which raises, and daphne
    answered 500 with a traceback in the log. commands/live/routing.py now routes every
    other path to a handler that answers 404 with the ASGI "websocket.http.response"
    extension; daphne lacks the extension, so this adds it: the scope advertises it and a
    `websocket.http.response.start` refuses the handshake with that status.

    Can go when daphne supports the denial-response extension (4.2 does not): an unknown
    path in tests/test_edges.py then gets its 404 without it.
    """
    server_module = sys.modules.get("daphne.server")
    ws_protocol = sys.modules.get("daphne.ws_protocol")
    if server_module is None or ws_protocol is None:
        return
    server_class, protocol_class = server_module.Server, ws_protocol.WebSocketProtocol
    if getattr(protocol_class.handle_reply, "homelab", False):
        return
    create_application, handle_reply = server_class.create_application, protocol_class.handle_reply
    deny = ws_protocol.ConnectionDeny

    def create_with_extension(self, protocol, scope):
        if scope.get("type") == "websocket":
            scope = {**scope, "extensions": {**scope.get("extensions", {}), DENIAL: {}}}
        return create_application(self, protocol, scope)

    def handle_denial(self, message):
        kind = message.get("type", "")
        if not kind.startswith(f"{DENIAL}."):
            return handle_reply(self, message)
        deferred = getattr(self, "handshake_deferred", None)
        if kind == f"{DENIAL}.start" and deferred is not None:
            status = int(message["status"])
            del self.handshake_deferred
            deferred.errback(deny(code=status, reason=HTTPStatus(status).phrase))
            self.server.protocol_disconnected(self)
            self.server.log_action("websocket", "rejected", {"path": self.request.path})
        return None  # the body: autobahn sends the status line alone

    handle_denial.homelab = True
    server_class.create_application = create_with_extension
    protocol_class.handle_reply = handle_denial


def one_line_for_abandoned_requests() -> None:
    """When daphne stops (Ctrl-C) with a request still waiting, it cancels Django's request
    handler but not the task Django started to listen for the client going away; that task
    then ends in RequestAborted, and asyncio logged "Task exception was never retrieved"
    with a traceback. An expected condition: one line instead.

    Can go when Django's ASGIHandler cancels its disconnect listener when cancelled itself
    (5.2 does not): tests/test_edges.py's Ctrl-C with a waiting request then logs no
    traceback without it.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    loop = getattr(reactor, "_asyncioEventloop", None)  # daphne's asyncio reactor
    if loop is None or getattr(loop.get_exception_handler(), "homelab", False):
        return
    from django.core.exceptions import RequestAborted

    previous = loop.get_exception_handler()

    def handle(loop, context) -> None:
        if isinstance(context.get("exception"), RequestAborted):
            logger.info("a request ended without an answer: its client went away")
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    handle.homelab = True
    loop.set_exception_handler(handle)


def apply() -> None:
    stop_commands_when_daphne_stops()
    stop_commands_when_uvicorn_stops()
    nodelay_on_uvicorns_inherited_sockets()
    let_slow_readers_finish()
    give_every_status_its_reason_phrase()
    log_daphne_access_as_json()
    answer_oversized_requests()
    answer_unknown_websocket_paths_with_404()
    one_line_for_abandoned_requests()
