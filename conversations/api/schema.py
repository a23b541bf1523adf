"""Schema hooks: the errors every endpoint may answer, described once for all of them."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR = {
    "type": "object",
    "description": "`detail` says what went wrong; a 400 names each field at fault instead "
                   "(`{\"cc\": [\"'x' is not a valid email address.\"], \"address\": \"x\"}`).",
    "properties": {"detail": {"type": "string"}},
    "additionalProperties": True,
}
COMMON = {
    "401": "Not signed in, or the token is unknown or revoked.",
    "404": "No such thing, or not in your departments (never 403).",
    "429": "Too many requests for this token or user; retry after the Retry-After header.",
}
WRITES = {"400": "Invalid input: the body names the fields and what is wrong with them."}


def add_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for item in result.get("paths", {}).values():
        for method, operation in item.items():
            if method not in {"get", "post", "patch", "put", "delete"}:
                continue
            errors = {**COMMON, **(WRITES if method != "get" or "parameters" in operation else {})}
            responses = operation.setdefault("responses", {})
            for code, description in errors.items():
                responses.setdefault(code, {"description": description, "content": reference})
    return result


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "conversations.api.authentication.TokenAuthentication"
    name = "token"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer",
                "description": "A personal or bot token (sb_…), created in the admin or at /api/tokens/."}
