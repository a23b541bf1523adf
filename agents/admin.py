from django import forms
from django.contrib import admin

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
    list_display = ["name", "kind", "presence", "capacity"]
    list_filter = ["kind", "presence", "departments"]
    search_fields = ["name", "user__username", "user__email"]
    filter_horizontal = ["departments"]
