"""TAFC on thousands of real tool schemas: BFCL's function definitions (the `bfcl-eval` wheel,
pinned and downloaded by `make setup` into `.venv/corpus/`; its data is read, it is not installed).

Every definition, converted to JSON Schema the way BFCL sends it to OpenAI-style models,
augments (both modes) to a schema that passes the JSON Schema meta-schema check; an
argument object valid for the original schema, written as a model would against the
augmented one, validates there and strips back to itself.
"""

from __future__ import annotations

import json
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from proxy.tafc import augment_function, strip_arguments

WHEEL = Path(sys.prefix) / "corpus" / "bfcl_eval-2026.3.23-py3-none-any.whl"
pytestmark = pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL} is not there: run make setup")

# BFCL's own type names -> JSON Schema (what its OpenAI-style handlers send)
TYPES = {"dict": "object", "float": "number", "tuple": "array", "any": "string", "String": "string",
         "Array": "array", "HashMap": "object", "long": "integer", "double": "number",
         "char": "string", "byte": "integer", "short": "integer", "ArrayList": "array",
         "Hashtable": "object", "Queue": "array", "Stack": "array", "Any": "string",
         "Bigint": "integer", "bool": "boolean", "list": "array", "Boolean": "boolean",
         "Integer": "integer", "int": "integer"}


def to_json_schema(s: Any) -> Any:
    if isinstance(s, list):
        return [to_json_schema(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {k: to_json_schema(v) for k, v in s.items()}
    t = out.get("type")
    if isinstance(t, str):
        out["type"] = TYPES.get(t, t)
    elif t is not None and not isinstance(t, list):
        del out["type"]  # a few definitions put a whole schema under "type"
    if out.get("type") == "object" and "properties" in out and not isinstance(out["properties"], dict):
        del out["properties"]
    return out


def functions() -> Iterator[dict[str, Any]]:
    """Every distinct function definition of the corpus."""
    seen: set[str] = set()
    for fn in _all_functions():
        key = json.dumps(fn, sort_keys=True)
        if key not in seen:
            seen.add(key)
            yield fn


def _all_functions() -> Iterator[dict[str, Any]]:
    with zipfile.ZipFile(WHEEL) as z:
        for name in z.namelist():
            if not (name.startswith("bfcl_eval/data/") and name.endswith(".json")) or \
                    "possible_answer" in name:
                continue
            for line in z.read(name).decode("utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not isinstance(row, dict):
                    continue
                for fn in row.get("function") or ([row] if "parameters" in row else []):
                    if isinstance(fn, dict) and isinstance(fn.get("parameters"), dict):
                        yield {**fn, "parameters": to_json_schema(fn["parameters"])}


def instance(s: Any) -> Any:
    """A small value valid for a schema (required properties only)."""
    if not isinstance(s, dict):
        return "x"
    if s.get("enum"):
        return s["enum"][0]
    t = s.get("type")
    if t == "object":
        props = s.get("properties") or {}
        return {k: instance(props[k]) for k in s.get("required") or [] if k in props}
    if t == "array":
        return [instance(s["items"])] if isinstance(s.get("items"), dict) else []
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(t), "x")


def written(args: dict[str, Any], plan: Any) -> dict[str, Any]:
    out: dict[str, Any] = {plan.think_key: "why these values"}
    for k, v in args.items():
        out[k] = {"think": "this one", "value": v} if k in plan.wrapped else v
    return out


def test_every_real_schema_augments_validly_and_round_trips() -> None:
    seen = checked = wrapped = 0
    validator = jsonschema.Draft202012Validator
    for fn in functions():
        seen += 1
        params = fn["parameters"]
        try:
            validator.check_schema(params)
        except jsonschema.SchemaError:
            continue  # not valid JSON Schema even before molt touches it
        args = instance(params)
        original_ok = validator(params).is_valid(args)
        for mode, tau in (("function", 0.6), ("parameter", 0.6), ("parameter", 0.2)):
            done = augment_function(fn, mode, tau)  # type: ignore[arg-type]
            assert done is not None, fn["name"]
            aug, plan = done
            validator.check_schema(aug["parameters"])
            if not original_ok:
                continue
            w = written(args, plan)
            assert validator(aug["parameters"]).is_valid(w), (fn["name"], mode, tau)
            assert json.loads(strip_arguments(json.dumps(w), plan).arguments) == args
            checked += 1
            wrapped += len(plan.wrapped)
    print(f"{seen} distinct definitions, {checked} round trips, {wrapped} wrapped parameters")
    assert seen > 2000 and checked > 3 * 1500, (seen, checked)
    assert wrapped > 0
