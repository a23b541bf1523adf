"""URL configuration."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from config.health import healthz

admin.site.site_header = "Switchboard"
admin.site.site_title = "Switchboard admin"
admin.site.index_title = "Mailboxes, departments and agents"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    # The agent console is its own issue; until it lands, the front door is the admin.
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]
