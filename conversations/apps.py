from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from conversations.acknowledgements import on_conversation_started
        from conversations.signals import conversation_started

        conversation_started.connect(on_conversation_started, dispatch_uid="conversations.acknowledge")
