"""Tests run servers with molt's own embedded runner (real uvicorn on loopback)."""

from molt.embedded import ServerThread, free_port

__all__ = ["ServerThread", "free_port"]
