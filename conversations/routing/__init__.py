"""Routing: choose an agent (pure), drain a department's queue, hand off from an AI agent."""
