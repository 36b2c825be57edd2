"""TAFC: augment-then-strip is the identity on the arguments (property-based), schemas stay valid."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.tafc import Plan, augment_function, augment_tools, complexity, strip_arguments
from proxy.tafc_stream import StreamStripper

NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)


def leaf() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.just({"type": "string"}),
        st.just({"type": "string", "format": "date", "description": "a date"}),
        st.just({"type": "string", "pattern": "^[0-9]{2}:[0-9]{2}$"}),
        st.just({"type": "string", "enum": ["a", "b", "c"]}),
        st.just({"type": "integer", "minimum": 0, "maximum": 100}),
        st.just({"type": "number"}),
        st.just({"type": "boolean"}),
        st.just({"type": ["string", "null"]}),
    )


def schema() -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaf(),
        lambda inner: st.one_of(
            st.builds(lambda i: {"type": "array", "items": i}, inner),
            st.builds(lambda p: {"type": "object", "properties": p, "additionalProperties": False},
                      st.dictionaries(NAMES, inner, min_size=1, max_size=3)),
            st.builds(lambda a, b: {"anyOf": [a, b]}, inner, inner),
        ),
        max_leaves=6,
    )


def value_for(data: st.DataObject, s: dict[str, Any]) -> Any:
    if "anyOf" in s:
        return value_for(data, data.draw(st.sampled_from(s["anyOf"])))
    t = s.get("type")
    if isinstance(t, list):
        return data.draw(st.one_of(st.none(), st.text(max_size=5)))
    if "enum" in s:
        return data.draw(st.sampled_from(s["enum"]))
    if t == "string":
        if "pattern" in s:
            return data.draw(st.from_regex(r"\A[0-9]{2}:[0-9]{2}\Z"))
        if s.get("format") == "date":
            return str(data.draw(st.dates()))
        return data.draw(st.text(max_size=10))
    if t == "integer":
        return data.draw(st.integers(0, 100))
    if t == "number":
        return data.draw(st.floats(allow_nan=False, allow_infinity=False, width=32))
    if t == "boolean":
        return data.draw(st.booleans())
    if t == "array":
        return [value_for(data, s["items"]) for _ in range(data.draw(st.integers(0, 2)))]
    if t == "object":
        return {k: value_for(data, v) for k, v in s["properties"].items()}
    raise AssertionError(s)


FUNCTIONS = st.builds(
    lambda props, strict, real_think: {
        "name": "f", "strict": strict,
        "parameters": {"type": "object",
                       "properties": {**props, **({"think": {"type": "string"}} if real_think else {})},
                       "required": [*props, *(["think"] if real_think else [])],
                       "additionalProperties": False},
    },
    st.dictionaries(NAMES.filter(lambda n: n not in ("think", "_think")), schema(), min_size=1,
                    max_size=4),
    st.booleans(), st.booleans(),
)


def model_arguments(data: st.DataObject, fn: dict[str, Any], augmented: dict[str, Any],
                    plan: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what the agent's own schema allows, what a model writes against the augmented schema)."""
    original = {k: value_for(data, v) for k, v in fn["parameters"]["properties"].items()}
    written: dict[str, Any] = {plan.think_key: data.draw(st.text(max_size=20))}
    for k, v in original.items():
        written[k] = {"think": data.draw(st.text(max_size=8)), "value": v} if k in plan.wrapped else v
    return original, written


@settings(max_examples=150, deadline=None)
@given(FUNCTIONS, st.sampled_from(["function", "parameter"]), st.sampled_from([0.0, 0.3, 0.6]),
       st.data())
def test_augment_then_strip_is_the_identity(fn: dict[str, Any], mode: str, tau: float,
                                            data: st.DataObject) -> None:
    done = augment_function(fn, mode, tau)  # type: ignore[arg-type]
    assert done is not None
    augmented, plan = done
    params = augmented["parameters"]
    jsonschema.Draft202012Validator.check_schema(params)
    assert next(iter(params["properties"])) == plan.think_key  # think comes first
    if "think" in fn["parameters"]["properties"]:
        assert plan.think_key != "think"  # molt's own key never takes a real parameter's place
    if fn["strict"]:
        assert set(params["required"]) == set(params["properties"])
        assert params["additionalProperties"] is False
    original, written = model_arguments(data, fn, augmented, plan)
    jsonschema.validate(original, fn["parameters"])
    jsonschema.validate(written, params)
    stripped = strip_arguments(json.dumps(written), plan)
    assert json.loads(stripped.arguments) == original
    assert stripped.flags == []


@settings(max_examples=60, deadline=None)
@given(FUNCTIONS, st.data())
def test_streamed_deltas_strip_to_the_same_call(fn: dict[str, Any], data: st.DataObject) -> None:
    augmented, plan_one = augment_function(fn, "parameter", 0.3)  # type: ignore[misc]
    original, written = model_arguments(data, fn, augmented, plan_one)
    text = json.dumps(written)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    s = StreamStripper(Plan({"f": plan_one}))
    sent: list[dict[str, Any]] = []
    first = {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}},
    ]}, "finish_reason": None}]}
    for chunk in [first] + [{"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": p}}]}, "finish_reason": None}]} for p in pieces] + [
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]:
        out = s.feed(chunk)
        if out is not None:
            sent.append(out)
    calls = [tc for c in sent for ch in c["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert len(calls) == 1 and calls[0]["id"] == "call_1" and calls[0]["index"] == 0
    assert json.loads(calls[0]["function"]["arguments"]) == original
    assert sent[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_a_real_parameter_named_think_survives() -> None:
    fn = {"name": "note", "parameters": {"type": "object", "properties": {
        "think": {"type": "string"}, "text": {"type": "string"}}}}
    _, plan = augment_function(fn, "function", 0.6)  # type: ignore[misc]
    assert plan.think_key == "_think"
    out = strip_arguments(json.dumps({"_think": "why", "think": "real", "text": "t"}), plan)
    assert json.loads(out.arguments) == {"think": "real", "text": "t"}
    assert out.think == ["why"]


def test_arguments_that_are_not_json_pass_untouched_and_are_flagged() -> None:
    _, plan = augment_function({"name": "f", "parameters": {"type": "object", "properties": {}}},
                               "function", 0.6)  # type: ignore[misc]
    out = strip_arguments('{"think": "x", "a": ', plan)
    assert out.arguments == '{"think": "x", "a": ' and out.flags == ["invalid_json"]


def test_complexity_weighs_type_constraints_and_dependencies() -> None:
    props = {"start": {"type": "string"},
             "end": {"type": "string", "format": "date-time", "description": "after start"},
             "plain": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}
    params = {"type": "object", "properties": props}
    assert complexity("plain", props["plain"], siblings=props, parameters=params) == 0.0
    assert complexity("end", props["end"], siblings=props, parameters=params) > 0.6
    assert complexity("tags", props["tags"], siblings=props, parameters=params) < 0.6
    refd = {"type": "object", "$defs": {"Addr": {"type": "object", "properties": {
        "city": {"type": "string"}, "geo": {"type": "object", "properties": {"lat": {"type": "number"}}}}}},
        "properties": {"addr": {"$ref": "#/$defs/Addr"}}}
    assert complexity("addr", refd["properties"]["addr"], siblings=["addr"], parameters=refd) > 0.4


def test_only_named_tools_are_augmented() -> None:
    tools = [{"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
             for n in ("a", "b")]
    out, plan = augment_tools(tools, "function", only=["b"])
    assert set(plan.tools) == {"b"}
    assert out[0] == tools[0] and "think" in out[1]["function"]["parameters"]["properties"]
    assert augment_tools(tools, "off")[0] == tools
