from django.contrib import admin

from departments.models import Department


@admin.register(Department)
class DepartmentAdmin(admin.ModelAdmin):
    list_display = ["name", "routing_strategy", "default_capacity"]
    search_fields = ["name"]
