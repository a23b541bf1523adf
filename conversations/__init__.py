"""Conversations: contacts, threads and messages; ingest, threading, routing, replies, events."""
