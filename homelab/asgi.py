"""ASGI entry point: Django for HTTP, Channels for WebSockets."""

import os

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

from homelab import asgi_patches

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "homelab.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from commands.api.fastpath import FastExecute  # noqa: E402
from commands.live.routing import websocket_urlpatterns  # noqa: E402 (needs Django set up)

application = ProtocolTypeRouter(
    {
        # A script's execute takes the short path (same pipeline, same answer); the rest,
        # Django's (commands/api/fastpath.py).
        "http": FastExecute(django_asgi_app),
        # The session (for the admin) is read here; the consumer decides whether it counts
        # (same origin only), and also accepts API-key headers and single-use tickets.
        "websocket": AuthMiddlewareStack(URLRouter(websocket_urlpatterns)),
    }
)


# daphne's and uvicorn's shutdown, close handshake and status lines: homelab/asgi_patches.py.
asgi_patches.apply()
