"""Every API route. tests/api/test_permissions.py holds a permission case for each one: a route
added here without one fails the suite."""

from __future__ import annotations

from django.urls import path

from conversations.api import (
    agents,
    canned_responses,
    connection_test,
    contacts,
    conversations,
    files,
    inboxes,
    manage,
    messages,
    quarantine,
    reads,
    tokens,
)

app_name = "api"

urlpatterns = [
    path("conversations/", conversations.ConversationList.as_view(), name="conversations"),
    path("conversations/<uuid:conversation>/", conversations.ConversationDetail.as_view(), name="conversation"),
    path("conversations/<uuid:conversation>/assign/", conversations.Assign.as_view(), name="assign"),
    path("conversations/<uuid:conversation>/unassign/", conversations.Unassign.as_view(), name="unassign"),
    path("conversations/<uuid:conversation>/transfer/", conversations.Transfer.as_view(), name="transfer"),
    path("conversations/<uuid:conversation>/status/", conversations.SetStatus.as_view(), name="status"),
    path("conversations/<uuid:conversation>/priority/", conversations.SetPriority.as_view(), name="priority"),
    path("conversations/<uuid:conversation>/subject/", conversations.SetSubject.as_view(), name="subject"),
    path("conversations/<uuid:conversation>/read/", reads.MarkRead.as_view(), name="read"),
    path("conversations/<uuid:conversation>/messages/", messages.MessageList.as_view(), name="messages"),
    path("conversations/<uuid:conversation>/replies/", messages.Reply.as_view(), name="reply"),
    path("conversations/<uuid:conversation>/notes/", messages.Note.as_view(), name="note"),
    path("messages/<uuid:message>/resend/", messages.Resend.as_view(), name="resend"),
    path("messages/<uuid:message>/raw/", messages.RawSource.as_view(), name="raw"),
    path("attachments/<uuid:attachment>/", files.AttachmentDownload.as_view(), name="attachment"),
    path("uploads/", files.UploadCreate.as_view(), name="uploads"),
    path("contacts/", contacts.ContactList.as_view(), name="contacts"),
    path("contacts/<uuid:contact>/", contacts.ContactDetail.as_view(), name="contact"),
    path("canned-responses/", canned_responses.CannedResponseList.as_view(), name="canned-responses"),
    path("canned-responses/<uuid:canned_response>/", canned_responses.CannedResponseDetail.as_view(),
         name="canned-response"),
    path("canned-responses/<uuid:canned_response>/render/", canned_responses.RenderCannedResponse.as_view(),
         name="canned-response-render"),
    path("agents/", agents.Colleagues.as_view(), name="agents"),
    path("agents/me/", agents.Me.as_view(), name="me"),
    path("agents/me/presence/", agents.SetPresence.as_view(), name="presence"),
    path("tokens/", tokens.TokenList.as_view(), name="tokens"),
    path("tokens/<uuid:token>/", tokens.TokenRevoke.as_view(), name="token"),
    # Managers only; 404 for everyone else.
    path("manage/departments/", manage.DepartmentList.as_view(), name="manage-departments"),
    path("manage/departments/<uuid:department>/", manage.DepartmentDetail.as_view(), name="manage-department"),
    path("manage/agents/", manage.AgentList.as_view(), name="manage-agents"),
    path("manage/agents/<uuid:agent>/", manage.AgentDetail.as_view(), name="manage-agent"),
    path("manage/inboxes/", inboxes.InboxList.as_view(), name="manage-inboxes"),
    path("manage/inboxes/<uuid:inbox>/", inboxes.InboxDetail.as_view(), name="manage-inbox"),
    path("manage/inboxes/<uuid:inbox>/status/", inboxes.InboxStatus.as_view(), name="manage-inbox-status"),
    path("manage/inboxes/<uuid:inbox>/test-connection/", connection_test.InboxConnectionTest.as_view(),
         name="manage-inbox-test-connection"),
    path("manage/quarantine/", quarantine.QuarantineList.as_view(), name="manage-quarantine"),
    path("manage/quarantine/<uuid:quarantined>/raw/", quarantine.QuarantineRaw.as_view(), name="manage-quarantine-raw"),
    path("manage/quarantine/<uuid:quarantined>/retry/", quarantine.QuarantineRetry.as_view(),
         name="manage-quarantine-retry"),
    path("manage/quarantine/<uuid:quarantined>/discard/", quarantine.QuarantineDiscard.as_view(),
         name="manage-quarantine-discard"),
]
