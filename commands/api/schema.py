"""drf-spectacular extensions and hooks: how our API-key authentication, our own fields, our
paths and our error bodies appear in OpenAPI."""

import re

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


# An action on one object: POST .../{id}/<verb>/ (execute, check, cancel, stream-ticket).
ACTION_PATH = re.compile(r".*/\{[^/}]+\}/[^{}]+/")


def document_actions_without_slash(result, generator, request, public):
    """One form for the docs and the schema: objects and lists end in a slash
    (`servers/{id}/`), actions on an object do not (`executions/{id}/cancel`), as the
    contract and the README spell them. The routes accept both forms."""

    def spelled(path: str, operations: dict) -> str:
        methods = {method for method in operations if method != "parameters"}
        is_action = ACTION_PATH.fullmatch(path) and methods == {"post"}
        return path.rstrip("/") if is_action else path

    paths = result.get("paths", {})
    result["paths"] = {spelled(path, ops): ops for path, ops in paths.items()}  # order kept
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
