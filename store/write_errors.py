"""Is a failed write the data's fault or the database's? Translated once, here.

`classify` turns a driver or SQLAlchemy error raised by a write into
`StoreUnavailable` (transient: the server is down, restarting, locked, out of
connections; retrying the same rows later can succeed) or `InvalidInput` (the
rows themselves were refused: a value the column or type does not take, a
constraint; retrying them can never succeed). Anything else is not a database
error and is returned as None, for the caller to raise as the bug it is.

Neither message carries the statement's parameters (prompts): only the error
class and, where the server gave one, the SQLSTATE.
"""

from __future__ import annotations

import sqlalchemy.exc as sa_exc

from store.errors import InvalidInput, StoreError, StoreUnavailable

# SQLSTATE classes that say nothing about the rows: connection exceptions,
# serialization failures and deadlocks, insufficient resources, operator
# intervention (shutdown, cannot connect now), system and internal errors.
_TRANSIENT_CLASSES = {"08", "40", "53", "57", "58", "XX"}
_TRANSIENT_CODES = {"55P03"}  # lock_not_available
_DATA_ERRORS = (ValueError, TypeError, UnicodeError, OverflowError, RecursionError)


def _sqlstate(exc: sa_exc.DBAPIError) -> str | None:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def _caused_by_data(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, _DATA_ERRORS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def describe(exc: BaseException) -> str:
    """A log-safe name for an error: its class and SQLSTATE, never its message."""
    name = type(exc).__name__
    if isinstance(exc, sa_exc.DBAPIError):
        name = f"{name}/{type(exc.orig).__name__}"
        code = _sqlstate(exc)
        if code:
            name += f" sqlstate={code}"
    return name[:128]


def classify(exc: BaseException) -> StoreError | None:
    """StoreUnavailable, InvalidInput, or None for an error that is not the database's."""
    what = describe(exc)
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sa_exc.DBAPIError):
        code = _sqlstate(exc)
        if exc.connection_invalidated or isinstance(exc.orig, OSError | TimeoutError):
            return StoreUnavailable(f"store unreachable ({what})")
        if code is not None:
            if code[:2] in _TRANSIENT_CLASSES or code in _TRANSIENT_CODES:
                return StoreUnavailable(f"store unavailable ({what})")
            return InvalidInput(f"rows refused by the store ({what})")
        # A driver that checks values before sending them (asyncpg: int out of
        # range, a str that does not encode) reports an InterfaceError caused
        # by a ValueError: the rows' fault.
        if (exc.orig is not None and _caused_by_data(exc.orig)) or isinstance(
            exc, sa_exc.IntegrityError | sa_exc.DataError | sa_exc.ProgrammingError
        ):
            return InvalidInput(f"rows refused by the store ({what})")
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return StoreUnavailable(f"store unavailable ({what})")
        return InvalidInput(f"rows refused by the store ({what})")
    if isinstance(exc, sa_exc.StatementError):  # a value that could not be bound
        return InvalidInput(f"rows refused by the store ({what})")
    if isinstance(exc, OSError | TimeoutError | sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return StoreUnavailable(f"store unreachable ({what})")
    if isinstance(exc, _DATA_ERRORS):
        return InvalidInput(f"rows refused by the store ({what})")
    return None
