"""The TLS client context both mail transports use: the system's trust store plus our CA files."""

from __future__ import annotations

import ssl
from collections.abc import Iterable


def client_context(verify: bool, ca_files: Iterable[str] = ()) -> ssl.SSLContext:
    """Verify against the system store and `ca_files` (each loaded once, in order); skip checks only when asked."""
    context = ssl.create_default_context()
    for ca_file in dict.fromkeys(name for name in ca_files if name):
        context.load_verify_locations(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
