"""The department admin: who works its mailboxes (members), how conversations are routed, capacity."""

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from departments.models import Department


class MembershipInline(admin.TabularInline):
    # The agents' side of Agent.departments, reached through the relation: this app is below agents.
    model = Department.agents.through
    extra = 0
    verbose_name, verbose_name_plural = "member", "members"
    autocomplete_fields = ["agent"]


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "routing_strategy", "default_capacity", "ai_first", "return_on_offline", "member_count",
                    "inbox_count"]
    list_filter = ["routing_strategy", "ai_first"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Department]:
        return super().get_queryset(request).annotate(
            members=Count("agents", distinct=True), mailboxes=Count("inboxes", distinct=True))

    @admin.display(description="Members", ordering="members")
    def member_count(self, department: Department) -> int:
        return department.members

    @admin.display(description="Inboxes", ordering="mailboxes")
    def inbox_count(self, department: Department) -> int:
        return department.mailboxes
