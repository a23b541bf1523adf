"""The agent console: server-rendered pages that call the same actions and reads as the API."""
