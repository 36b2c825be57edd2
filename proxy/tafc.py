"""Think-augmented function calling (TAFC, arXiv 2601.18282): augment tools, strip calls.

On the way up, every enabled tool gets an optional `think` string as the first
property of its parameters (the model writes its reasoning before the
arguments); in "parameter" mode each top-level parameter whose complexity
score exceeds `tau` becomes a `{think, value}` object. The tool's behaviour is
unchanged: f'(P, think) = f(P). On the way back, exactly what molt added is
removed again — the `think` key molt added (under another name when the tool
already has a real parameter called `think`, which then survives untouched),
and the `{think, value}` wrappers of exactly the parameters molt wrapped — so
the agent receives the calls its own schemas describe, and the reasoning goes
to the trajectory.

Our instantiation of the complexity score (the paper's formula is not
published). For a parameter schema s (with `$ref` resolved against `$defs` /
`definitions`), in [0, 1], the sum of three parts, capped at 1:

- type complexity: an object with properties 0.35 (+0.1 per further nesting
  level), an array 0.2 (0.35 when its items are objects), a combinator
  (`anyOf`/`oneOf`/`allOf`) 0.35, a type list of two or more types 0.2;
- constraints: `format` or `pattern` 0.35; an `enum`/`const` 0.15; numeric or
  length ranges (`minimum`, `maximum`, `exclusive*`, `minLength`, `maxLength`,
  `minItems`, `maxItems`, `multipleOf`) 0.15;
- dependency on other parameters: the description names another parameter
  0.3; the parameter appears in `dependentRequired` / `dependencies` /
  `dependentSchemas` 0.3.

With tau = 0.6 a plain string, number, or enum stays as it is; a formatted or
patterned string that depends on another parameter, a nested object, or a
combinator with constraints is wrapped.

Strict function schemas (`strict: true`) stay valid for strict mode: every
property molt adds is listed in `required` (with `think` typed
`["string", "null"]`, so the model can leave it empty), and every object molt
adds has `additionalProperties: false`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = dict[str, Any]
Mode = Literal["off", "function", "parameter"]
MODES: tuple[Mode, ...] = ("off", "function", "parameter")

THINK_DESCRIPTION = (
    "Think step by step about which values this call needs and why, before writing the "
    "other arguments. Not passed to the tool."
)
VALUE_THINK_DESCRIPTION = "Reason about this one value before writing it."

_RANGE_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength",
               "maxLength", "minItems", "maxItems", "multipleOf")
_COMBINATORS = ("anyOf", "oneOf", "allOf")


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What molt added to one tool: the key of its think property, the wrapped parameters."""

    think_key: str
    wrapped: frozenset[str] = frozenset()


@dataclass(slots=True)
class Plan:
    """Per augmented tool name, what to strip from its calls."""

    tools: dict[str, ToolPlan] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tools)

    def for_tool(self, name: str | None) -> ToolPlan | None:
        return self.tools.get(name) if name is not None else None


@dataclass(slots=True)
class Stripped:
    arguments: str
    think: list[str] = field(default_factory=list)
    # "invalid_json": arguments were not JSON (passed through untouched);
    # "not_wrapped:<param>": the model wrote a wrapped parameter bare (kept as written)
    flags: list[str] = field(default_factory=list)


# -- the complexity score ----------------------------------------------------

def _resolve(schema: Any, defs: Mapping[str, Any], seen: int = 0) -> Any:
    while isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str) and seen < 16:
        m = re.match(r"^#/(\$defs|definitions)/(.+)$", schema["$ref"])
        if m is None or m.group(2) not in defs:
            return schema
        schema = defs[m.group(2)]
        seen += 1
    return schema


def _depth(schema: Any, defs: Mapping[str, Any], level: int = 0) -> int:
    schema = _resolve(schema, defs)
    if not isinstance(schema, Mapping) or level > 8:
        return level
    subs: list[Any] = []
    props = schema.get("properties")
    if isinstance(props, Mapping):
        subs += list(props.values())
    if isinstance(schema.get("items"), Mapping):
        subs.append(schema["items"])
    deeper = [_depth(s, defs, level + 1) for s in subs if isinstance(_resolve(s, defs), Mapping)
              and (_resolve(s, defs).get("properties") or _resolve(s, defs).get("items"))]
    return max([level, *deeper])


def complexity(
    name: str, schema: Any, *, siblings: Iterable[str] = (), parameters: Mapping[str, Any] | None = None,
) -> float:
    """molt's complexity score of one parameter (see the module docstring)."""
    params = parameters or {}
    defs = {**(params.get("definitions") or {}), **(params.get("$defs") or {})}
    s = _resolve(schema, defs)
    if not isinstance(s, Mapping):
        return 0.0
    score = 0.0
    types = s.get("type")
    items = _resolve(s.get("items"), defs)
    if isinstance(s.get("properties"), Mapping) and s["properties"]:
        score += 0.35 + 0.1 * _depth(s, defs)
    elif types == "array" or items is not None:
        score += 0.35 if isinstance(items, Mapping) and (
            items.get("type") == "object" or items.get("properties")) else 0.2
    if any(k in s for k in _COMBINATORS):
        score += 0.35
    if isinstance(types, list) and len([t for t in types if t != "null"]) >= 2:
        score += 0.2
    if "format" in s or "pattern" in s:
        score += 0.35
    if "enum" in s or "const" in s:
        score += 0.15
    if any(k in s for k in _RANGE_KEYS):
        score += 0.15
    desc = s.get("description") if isinstance(s.get("description"), str) else ""
    desc = desc or (schema.get("description") if isinstance(schema, Mapping)
                    and isinstance(schema.get("description"), str) else "")
    others = [o for o in siblings if o != name and len(o) > 1]
    if desc and any(re.search(rf"\b{re.escape(o)}\b", desc) for o in others):
        score += 0.3
    for key in ("dependentRequired", "dependencies", "dependentSchemas"):
        dep = params.get(key)
        if isinstance(dep, Mapping) and (name in dep or any(
                isinstance(v, list) and name in v for v in dep.values())):
            score += 0.3
            break
    return min(1.0, score)


# -- augmentation --------------------------------------------------------------

def _think_key(properties: Mapping[str, Any]) -> str:
    key = "think"
    while key in properties:
        key = "_" + key
    return key


def _think_schema(strict: bool, description: str) -> JSON:
    return {"type": ["string", "null"] if strict else "string", "description": description}


def _wrap(schema: Any, strict: bool) -> JSON:
    wrapper: JSON = {
        "type": "object",
        "properties": {"think": _think_schema(strict, VALUE_THINK_DESCRIPTION), "value": schema},
        "required": ["think", "value"] if strict else ["value"],
        "additionalProperties": False,
    }
    if isinstance(schema, Mapping) and isinstance(schema.get("description"), str):
        wrapper["description"] = schema["description"]
    return wrapper


def augment_function(fn: Mapping[str, Any], mode: Mode, tau: float) -> tuple[JSON, ToolPlan] | None:
    """The augmented copy of one OpenAI `function` object and what to strip; None to leave it."""
    params = fn.get("parameters")
    if params is None:
        params = {"type": "object", "properties": {}}
    if not isinstance(params, Mapping) or params.get("type", "object") != "object":
        return None
    props = params.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, Mapping):
        return None
    strict = fn.get("strict") is True
    new_params: JSON = copy.deepcopy(dict(params))
    key = _think_key(props)
    wrapped: set[str] = set()
    new_props: JSON = {key: _think_schema(strict, THINK_DESCRIPTION)}
    for pname, pschema in props.items():
        if mode == "parameter" and complexity(pname, pschema, siblings=props.keys(),
                                              parameters=params) > tau:
            new_props[pname] = _wrap(copy.deepcopy(pschema), strict)
            wrapped.add(pname)
        else:
            new_props[pname] = copy.deepcopy(pschema)
    new_params["properties"] = new_props
    new_params["type"] = "object"
    required = params.get("required")
    if strict:
        new_params["required"] = [key, *(required if isinstance(required, list) else [])]
        new_params["additionalProperties"] = False
    new_fn = {**copy.deepcopy(dict(fn)), "parameters": new_params}
    return new_fn, ToolPlan(key, frozenset(wrapped))


def augment_tools(
    tools: Sequence[Any], mode: Mode, tau: float = 0.6, only: Iterable[str] | None = None,
) -> tuple[list[Any], Plan]:
    """Augment every enabled function tool of a Chat Completions `tools` list."""
    plan = Plan()
    if mode == "off":
        return list(tools), plan
    names = set(only) if only is not None else None
    out: list[Any] = []
    for tool in tools:
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if (not isinstance(name, str) or tool.get("type", "function") != "function"
                or (names is not None and name not in names) or name in plan.tools):
            out.append(tool)
            continue
        done = augment_function(fn, mode, tau)  # type: ignore[arg-type]
        if done is None:
            out.append(tool)
            continue
        out.append({**tool, "function": done[0]})
        plan.tools[name] = done[1]
    return out, plan


# -- stripping -----------------------------------------------------------------

def strip_arguments(arguments: str, tool: ToolPlan) -> Stripped:
    """Remove what molt added from one call's JSON arguments; other text passes untouched."""
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except (json.JSONDecodeError, RecursionError):
        return Stripped(arguments, flags=["invalid_json"])
    if not isinstance(args, dict):
        return Stripped(arguments, flags=["invalid_json"])
    out = Stripped(arguments)
    changed = False
    if tool.think_key in args:
        think = args.pop(tool.think_key)
        changed = True
        if isinstance(think, str) and think.strip():
            out.think.append(think)
    for pname in sorted(tool.wrapped):
        if pname not in args:
            continue
        v = args[pname]
        if isinstance(v, dict) and "value" in v and set(v) <= {"think", "value"}:
            args[pname] = v["value"]
            changed = True
            if isinstance(v.get("think"), str) and v["think"].strip():
                out.think.append(f"{pname}: {v['think']}")
        else:
            out.flags.append(f"not_wrapped:{pname}")
    if changed:
        out.arguments = json.dumps(args, ensure_ascii=False)
    return out


def strip_message(message: JSON, plan: Plan) -> tuple[list[JSON], list[str]]:
    """Strip every augmented call of an assistant message in place; (think records, flags)."""
    thinks: list[JSON] = []
    flags: list[str] = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            continue
        tool = plan.for_tool(fn.get("name"))
        if tool is None or not isinstance(fn.get("arguments"), str):
            continue
        s = strip_arguments(fn["arguments"], tool)
        fn["arguments"] = s.arguments
        flags += s.flags
        thinks += [{"source": "tafc", "call_id": call.get("id"), "tool": fn.get("name"), "text": t}
                   for t in s.think]
    return thinks, flags


def strip_completion(data: JSON, plan: Plan) -> tuple[list[JSON], list[str]]:
    """Strip a non-streamed chat completion in place."""
    thinks: list[JSON] = []
    flags: list[str] = []
    for choice in data.get("choices") or []:
        msg = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(msg, dict):
            t, f = strip_message(msg, plan)
            thinks += t
            flags += f
    return thinks, flags


def tafc_record(thinks: list[JSON], flags: list[str]) -> list[JSON] | None:
    """The turn's `think` field: the stripped reasoning, and a flag entry per anomaly
    (arguments that were not JSON and passed through untouched, a wrapped parameter
    the model wrote bare)."""
    out = list(thinks) + [{"source": "tafc", "flag": f} for f in flags]
    return out or None
