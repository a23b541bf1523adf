"""Tasks that deliver outgoing messages."""
