"""The mail format: raw bytes into plain values (parsing, charsets, sanitizing). Knows nothing of conversations."""
