"""AI agent backends. They work on plain data and never import conversations."""
