"""threadchat: a threaded multi-user chat server."""

__version__ = "0.1.0"
