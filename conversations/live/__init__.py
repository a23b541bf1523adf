"""The live layer: events after commit, and the console's websocket."""
