"""Outgoing mail: compose once, queue, deliver exactly once, acknowledge."""
