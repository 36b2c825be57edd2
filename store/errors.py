"""Errors raised by the store. Database driver errors are translated here, once."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class NotFound(StoreError):
    """A session, turn, key or tenant that does not exist."""


class Conflict(StoreError):
    """A write that would break a uniqueness rule."""


class InvalidInput(StoreError):
    """A value that the store refuses (bad score, bad name...)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached."""
