"""Upstreams: the one extension point for where a request is served."""
