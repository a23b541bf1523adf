"""Inboxes: team mailboxes, their IMAP/SMTP settings and the transports that speak to servers."""
