from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """Its own app so the console's rows (drafts, read markers) sit beside the console."""

    name = "conversations.console"
    label = "console"
    verbose_name = "Console"
