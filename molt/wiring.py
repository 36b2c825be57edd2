"""Putting the parts together: the app `molt serve` runs."""

from __future__ import annotations

from fastapi import FastAPI

from proxy.app import create_app
from proxy.upstream.routing import BackendFactory
from store.settings import MoltSettings


def backend_factories(settings: MoltSettings) -> dict[str, BackendFactory]:
    """In-process backends (local model serving, vLLM) wired by later issues."""
    return {}


def build_app(settings: MoltSettings) -> FastAPI:
    """The proxy with every subsystem wired in, from one settings tree."""
    return create_app(settings, backend_factories=backend_factories(settings))
