"""Make a turn storable on every supported database, whatever the client or upstream sent.

What PostgreSQL refuses and SQLite lets through (or the reverse) is fixed here,
once, before a row is written: strings longer than their column are cut (a
client-chosen session id is shortened to a prefix plus a hash, so two long ids
stay two sessions), non-finite numbers become JSON strings (`"NaN"`,
`"Infinity"`, `"-Infinity"`) inside JSON and null in number columns, NUL
characters are removed, lone UTF-16 surrogates become U+FFFD, integers out of
the column's range and values of the wrong type become null, and JSON too deep
to serialise is cut at `MAX_DEPTH`.

A value that needs no change is returned as it is (the same object), so a
clean turn costs one C-speed `json.dumps` scan per JSON column and no copy.
Runs in the recorder's writer, never on the request path.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import sqlalchemy as sa

from store import tables as t
from store.records import TurnRecord

MAX_DEPTH = 200
INT_MIN, INT_MAX = -(2**31), 2**31 - 1
_SURROGATE = re.compile("[\ud800-\udfff]")
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def clean_str(s: str, limit: int | None = None) -> str:
    """`s` without NUL characters or lone surrogates, cut to `limit` characters."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    if not s.isascii() and _SURROGATE.search(s) is not None:
        s = _SURROGATE.sub("\ufffd", s)
    if limit is not None and len(s) > limit:
        s = s[:limit]
    return s


def short_key(s: str, limit: int) -> str:
    """A clean `s` that fits `limit`: kept whole if it fits, else a prefix plus a hash of all of it.

    Used for identifiers chosen by clients (session ids): cutting alone would
    merge two long ids that share a prefix.
    """
    s = clean_str(s)
    if len(s) <= limit:
        return s
    digest = hashlib.blake2b(s.encode("utf-8"), digest_size=12).hexdigest()
    return f"{s[: limit - len(digest) - 1]}~{digest}"


def _needs_cleaning(value: Any) -> bool:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        return True
    return (
        "NaN" in text
        or "Infinity" in text
        or "\\u0000" in text
        or (not text.isascii() and _SURROGATE.search(text) is not None)
    )


def _clean(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return clean_str(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[repr(value)]
    if depth >= MAX_DEPTH:
        return "[molt: nested too deep, cut]"
    if isinstance(value, dict):
        return {
            clean_str(k) if isinstance(k, str) else clean_str(str(k)): _clean(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return clean_str(str(value))


def clean_json(value: Any) -> Any:
    """A JSON value every store accepts; `value` itself when it already is one."""
    if value is None or not _needs_cleaning(value):
        return value
    return _clean(value, 0)


def clean_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and INT_MIN <= value <= INT_MAX:
        return value
    return None


def clean_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _column_kinds(table: sa.Table) -> dict[str, tuple[str, int | None, bool]]:
    kinds: dict[str, tuple[str, int | None, bool]] = {}
    for col in table.columns:
        typ = col.type
        if isinstance(typ, sa.JSON):
            kind = "json"
        elif isinstance(typ, sa.Boolean):
            kind = "bool"
        elif isinstance(typ, sa.Integer):
            kind = "int"
        elif isinstance(typ, sa.Float):
            kind = "float"
        else:
            kind = "str"
        length = getattr(typ, "length", None)
        kinds[col.name] = (kind, length, bool(col.nullable))
    return kinds


_TURN_KINDS = _column_kinds(t.turns)
_EXTERNAL_ID_LEN = t.sessions.c.external_id.type.length or 256  # type: ignore[attr-defined]


def session_key(external_id: str) -> str:
    """The form a client's session id is stored and looked up in."""
    return short_key(external_id, _EXTERNAL_ID_LEN)


def _clean_value(kind: str, length: int | None, value: Any) -> Any:
    if kind == "json":
        return clean_json(value)
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return clean_int(value)
    if kind == "float":
        return clean_float(value)
    if not isinstance(value, str):
        value = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return clean_str(value, length)


def normalize_turn(rec: TurnRecord) -> TurnRecord:
    """Make every stored field of `rec` fit its column (in place; returns `rec`)."""
    for name, (kind, length, nullable) in _TURN_KINDS.items():
        value = getattr(rec, name, None)
        if value is None:
            if not nullable:
                setattr(rec, name, _NOT_NULL_DEFAULTS[kind])
            continue
        cleaned = _clean_value(kind, length, value)
        if cleaned is None and not nullable:
            cleaned = _NOT_NULL_DEFAULTS[kind]
        if cleaned is not value:
            setattr(rec, name, cleaned)
    if rec.session_external_id is not None:
        rec.session_external_id = session_key(str(rec.session_external_id))
    return rec


_NOT_NULL_DEFAULTS: dict[str, Any] = {"json": {}, "bool": False, "int": 0, "float": 0.0, "str": ""}
