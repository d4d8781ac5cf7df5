"""WebSocket routes (the HTTP ones are in urls.py)."""

from django.urls import re_path

from commands.live import consumers

websocket_urlpatterns = [
    re_path(
        r"^ws/v1/executions/(?P<execution_id>[^/]+)/?$",
        consumers.ExecutionStreamConsumer.as_asgi(),
    ),
    re_path(
        r"^ws/v1/batches/(?P<batch_id>[^/]+)/?$",
        consumers.BatchStreamConsumer.as_asgi(),
    ),
    re_path(
        r"^ws/v1/servers/(?P<server>[^/]+)/commands/execute/?$",
        consumers.ExecuteConsumer.as_asgi(),
    ),
]
