"""The REST API: thin views over conversations.actions, read through the one permission rule."""
