"""Request and response shapes; drf-spectacular builds the schema from them."""

from rest_framework import serializers

from commands.models import Server


class ServerSerializer(serializers.ModelSerializer):
    """A server as clients see it: never a key path or key material."""

    host_key_pinned = serializers.SerializerMethodField()

    class Meta:
        model = Server
        fields = ["id", "name", "hostname", "port", "username", "enabled", "host_key_pinned"]
        read_only_fields = fields

    def get_host_key_pinned(self, server: Server) -> bool:
        return bool(server.host_key)
