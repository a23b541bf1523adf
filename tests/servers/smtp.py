"""A real aiosmtpd SMTP server on loopback for tests (fixtures)."""
