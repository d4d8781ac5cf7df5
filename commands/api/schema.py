"""drf-spectacular extensions: how our API-key authentication and our own fields appear in
OpenAPI, and the postprocessing hooks that finish the schema."""

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerFieldExtension,
)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "commands.api.authentication.ApiKeyAuthentication"
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


# Statuses any operation can answer, whatever its own schema says: 400 (e.g. a NUL in the
# URL, a bad filter), 401 (no or a bad key), 404 (an unknown id or name) and 500.
COMMON_ERRORS = {
    "400": "`invalid`: a bad query parameter or path (e.g. a NUL character).",
    "401": "No key, or a bad/revoked key.",
    "404": "`not_found`: no such object.",
    "500": "`server_error`: an unexpected failure (logged server-side).",
}
ERROR_REF = {"$ref": "#/components/schemas/Error"}


def document_common_errors(result, generator, request, public):
    """Every operation documents 400, 401, 404 and a {"detail", "code"} 500 body.

    A 500 or 503 documented with a richer body (e.g. with execution_id) also allows the
    plain error body: an unexpected error, or a store that is down, has no audit row.
    """
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            responses = operation.get("responses", {})
            for status, description in COMMON_ERRORS.items():
                if status == "401" and {} in operation.get("security", []):
                    continue  # anonymous access is allowed: never a 401
                responses.setdefault(
                    status,
                    {
                        "content": {"application/json": {"schema": ERROR_REF}},
                        "description": description,
                    },
                )
            for status in ("500", "503"):
                content = responses.get(status, {}).get("content", {}).get("application/json")
                if content and content["schema"] != ERROR_REF and "anyOf" not in content["schema"]:
                    content["schema"] = {"anyOf": [content["schema"], ERROR_REF]}
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_SCHEMA)
    return result


# The Error component as ErrorSerializer produces it, for a schema with no operation
# that names it.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "A sentence saying what went wrong."},
        "code": {"type": "string", "description": "A stable machine-readable code."},
    },
    "required": ["detail", "code"],
}


class ServerRefFieldExtension(OpenApiSerializerFieldExtension):
    """A server in a batch's `servers`: its id (a number) or its name."""

    target_class = "commands.requests.ServerRefField"

    def map_serializer_field(self, auto_schema, direction):
        return {
            "oneOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "minLength": 1, "maxLength": 64},
            ]
        }


class LimitFieldExtension(OpenApiSerializerFieldExtension):
    """max_concurrency / max_errors: a whole number, or "N%" of the targets."""

    target_class = "commands.requests.LimitField"

    def map_serializer_field(self, auto_schema, direction):
        from commands.requests import MAX_LIMIT

        number = {"type": "integer", "minimum": self.target.minimum, "maximum": MAX_LIMIT}
        percent = {"type": "string", "pattern": r"^ *(100|[1-9][0-9]?)% *$"}
        schema = {"oneOf": [number, percent]}
        if self.target.allow_null:
            schema["nullable"] = True
        return schema


# The enums of the three models with a `status`, named after their model
# (SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"]); imported when the schema is generated.
def _choices(model_name: str) -> list[tuple[str, str]]:
    from commands import models

    return getattr(models, model_name).Status.choices


EXECUTION_STATUS = _choices("Execution")
BATCH_STATUS = _choices("Batch")
TARGET_STATUS = _choices("BatchTarget")
