from django.apps import AppConfig


class ApiConfig(AppConfig):
    """Its own app so the API's rows (tokens, idempotency keys, uploads) sit beside the API."""

    name = "conversations.api"
    label = "api"
    verbose_name = "API"

    def ready(self) -> None:
        from conversations.api import schema  # noqa: F401  (registers the token scheme with the schema)
