"""Incoming mail: poll a mailbox, ingest each message (dedup, threading, automatic mail, quarantine)."""
