"""drf-spectacular extensions: how our API-key authentication appears in OpenAPI."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "commands.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": 'Send "Api-Key <key>" (or the key alone in an X-API-Key header). '
            "Create a key with `./manage.py createapikey NAME`.",
        }


def document_execute_without_slash(result, generator, request, public):
    """Routes accept both forms; document the execute path as the contract spells it."""
    paths = result.get("paths", {})
    for path in [p for p in paths if p.endswith("/commands/execute/")]:
        paths[path.rstrip("/")] = paths.pop(path)
    return result
