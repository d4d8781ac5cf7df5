"""API views: thin; validation in serializers, work in services."""

from rest_framework import viewsets

from commands.models import Server
from commands.serializers import ServerSerializer


class ServerViewSet(viewsets.ReadOnlyModelViewSet):
    """Servers commands can be run on."""

    queryset = Server.objects.all()
    serializer_class = ServerSerializer
