"""ASGI entry point: Django for HTTP, Channels for WebSockets."""

import os
import sys

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homelab.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from commands.routing import websocket_urlpatterns  # noqa: E402 (needs Django set up)

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The session (for the admin) is read here; the consumer decides whether it counts
        # (same origin only), and also accepts API-key headers and single-use tickets.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)


def _stop_commands_when_daphne_stops() -> None:
    """On Ctrl-C or SIGTERM daphne waits for every request to end before it exits, and a
    request waiting for its command would hold it for as long as the command runs. So,
    first thing in its shutdown, drain and stop the running commands (commands/runner.py);
    the waiting requests then end at once."""
    reactor = sys.modules.get("twisted.internet.reactor")  # installed by daphne, if it runs us
    if reactor is None:
        return
    from twisted.internet import threads

    from commands.runner import shutdown_current

    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: threads.deferToThread(shutdown_current, server=True)
    )


_stop_commands_when_daphne_stops()

# How long a client may take to read what is queued for it, then answer our close frame.
CLOSE_HANDSHAKE_SECONDS = 60


def _let_slow_readers_finish() -> None:
    """A stream ends with its result frame and a close frame. daphne's WebSocket library
    (autobahn) aborts the TCP connection 1 s after that close unless the client has
    answered it, throwing away what is still queued, result included: a client reading a
    stream slower than it was produced lost its end (bench/stream.py, docs/performance.md).
    daphne has no option for that timeout, so it is set where daphne sets the others."""
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


_let_slow_readers_finish()


def _give_every_status_its_reason_phrase() -> None:
    """daphne writes twisted's reason phrase into the status line, and twisted's table
    lacks some codes the API answers with: a 429 went out as `429 Unknown Status`. Fill
    the gaps from the standard library's table (twisted's own phrases are kept)."""
    twisted_http = sys.modules.get("twisted.web.http")  # imported by daphne, if it runs us
    if twisted_http is None:
        return
    from http import HTTPStatus

    for status in HTTPStatus:
        twisted_http.RESPONSES.setdefault(status.value, status.phrase.encode("latin-1"))


_give_every_status_its_reason_phrase()
