"""Real mail servers for tests: Dovecot (IMAP) and aiosmtpd (SMTP) on loopback.

Fixtures are defined in tests/servers/dovecot.py and tests/servers/smtp.py and re-exported here.
"""
