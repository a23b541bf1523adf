from django import forms
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from agents.models import Agent
from config.admin_forms import SecretFieldsForm


class AgentForm(SecretFieldsForm):
    secret_fields = ("ai_api_key",)
    ai_base_url = forms.URLField(required=False, assume_scheme="https", label="AI base URL")

    class Meta:
        model = Agent
        fields = "__all__"


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    form = AgentForm
    list_display = ["name", "kind", "presence", "presence_changed_at", "capacity", "department_names", "enabled"]
    list_filter = ["kind", "presence", "enabled", "departments"]
    search_fields = ["name", "user__username", "user__email"]
    filter_horizontal = ["departments"]
    readonly_fields = ["presence", "presence_changed_at", "last_assigned_at"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).prefetch_related("departments")

    @admin.display(description="Departments")
    def department_names(self, agent: Agent) -> str:
        return ", ".join(department.name for department in agent.departments.all()) or "—"
