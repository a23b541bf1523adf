from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"

    def ready(self) -> None:
        from django.db.models.signals import m2m_changed, post_save

        from agents.models import Agent
        from conversations.outgoing.acknowledgements import on_conversation_started
        from conversations.routing import dispatch
        from conversations.signals import conversation_started
        from departments.models import Department

        conversation_started.connect(on_conversation_started, dispatch_uid="conversations.acknowledge")
        conversation_started.connect(dispatch.on_conversation_started, dispatch_uid="conversations.route")
        # Capacity that frees or grows outside an action (the admin): drain what waits.
        post_save.connect(dispatch.on_agent_saved, sender=Agent, dispatch_uid="conversations.route.agent")
        post_save.connect(dispatch.on_department_saved, sender=Department,
                          dispatch_uid="conversations.route.department")
        m2m_changed.connect(dispatch.on_agent_departments_changed, sender=Agent.departments.through,
                            dispatch_uid="conversations.route.membership")
