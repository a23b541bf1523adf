"""Agents: the humans and AI models that answer conversations."""
