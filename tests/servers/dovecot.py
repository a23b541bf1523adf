"""A real Dovecot IMAP server on loopback for tests (fixtures)."""
