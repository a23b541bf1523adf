"""The console's pages (mounted at /)."""

from django.contrib.auth import views as auth_views
from django.urls import path

from conversations.console import handlers, views

app_name = "console"

urlpatterns = [
    path("", views.index, name="index"),
    path("list/", views.conversation_list, name="list"),
    path("presence/", handlers.presence, name="presence"),
    path("c/<uuid:conversation>/", views.conversation_page, name="conversation"),
    path("c/<uuid:conversation>/thread/", views.thread_fragment, name="thread"),
    path("c/<uuid:conversation>/sidebar/", views.sidebar_fragment, name="sidebar"),
    path("c/<uuid:conversation>/canned/", views.canned_responses, name="canned"),
    path("c/<uuid:conversation>/assign/", handlers.assign, name="assign"),
    path("c/<uuid:conversation>/unassign/", handlers.unassign, name="unassign"),
    path("c/<uuid:conversation>/transfer/", handlers.transfer, name="transfer"),
    path("c/<uuid:conversation>/status/", handlers.set_status, name="status"),
    path("c/<uuid:conversation>/priority/", handlers.set_priority, name="priority"),
    path("c/<uuid:conversation>/unread/", handlers.mark_unread, name="unread"),
    path("c/<uuid:conversation>/send/", handlers.send, name="send"),
    path("c/<uuid:conversation>/draft/", handlers.save_draft, name="draft"),
    path("c/<uuid:conversation>/draft/files/", handlers.attach_files, name="draft_files"),
    path("draft-files/<uuid:file>/remove/", handlers.remove_file, name="remove_draft_file"),
    path("m/<uuid:message>/frame/", views.message_frame, name="frame"),
    path("m/<uuid:message>/status/", views.message_status, name="message_status"),
    path("m/<uuid:message>/resend/", handlers.resend, name="resend"),
]

# Sign-in, sign-out, password change and reset, with the console's templates (named as
# django.contrib.auth names them, outside the console's namespace).
account_urlpatterns = [
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("account/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("account/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("account/reset/", auth_views.PasswordResetView.as_view(), name="password_reset"),
    path("account/reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("account/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("account/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
]
