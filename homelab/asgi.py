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
        "before", "shutdown", lambda: threads.deferToThread(shutdown_current)
    )


_stop_commands_when_daphne_stops()
