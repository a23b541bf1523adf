"""URL configuration."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz
from conversations.console.urls import account_urlpatterns

admin.site.site_header = "Switchboard"
admin.site.site_title = "Switchboard admin"
admin.site.index_title = "Mailboxes, departments and agents"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/", include("conversations.api.urls")),
    *account_urlpatterns,
    path("", include("conversations.console.urls")),
]
