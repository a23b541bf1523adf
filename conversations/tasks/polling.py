"""Tasks that poll inboxes (incoming mail)."""
