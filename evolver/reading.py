"""Error readers: what a tool result says was wrong with a call, in the grammars real tools use.

A reader takes a tool result (the text the agent saw) and the call that got
it, and answers None when the result is not an error in its grammar, else a
`ToolFailure`: the error's message and what it states about each argument it
names (`Constraint`: which argument, where inside it when the error points
deeper (``to.city``), the refused value, and the accepted forms when stated: a placeholder pattern such as ``DD.MM.YYYY``, a regular
expression, a list of choices, bounds). `read_error` tries the default
readers in order, outermost envelope first:

- MCP tool results (``{"isError": true, "content": [{"type": "text", ...}]}``);
- FastAPI 422 bodies (``{"detail": [{"loc", "msg", "type", "input", "ctx"}]}``);
- RFC 9457 problem details (``type``/``title``/``status``/``detail``, with
  ``invalid-params`` or ``errors`` lists);
- OpenAI-style envelopes (``{"error": {"message", "param"}}``) and other
  HTTP-status JSON bodies (``{"status": 400, "message": ...}``);
- pydantic v2 `ValidationError` text;
- jsonschema `ValidationError` messages (optionally after a JSON path);
- plain text that says it is an error (``error: x must be ..., got ...``).

Envelopes hand their inner message to the text readers, so an OpenAI
envelope around a pydantic message is read as both. What a reader copies
(the refused value, a pattern) is data from the tool, to be quoted if it is
ever shown; the rule molt writes from a reading is in molt's own words
(`evolver.rules`), never the error's text or its example values.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from store.param_paths import parse_path

Args = Mapping[str, Any]


@dataclass(frozen=True)
class Constraint:
    """What an error states about one argument."""

    argument: str | None
    kind: str  # form | choice | range | type | missing | unexpected | other
    refused: Any = None
    forms: tuple[str, ...] = ()  # placeholder patterns: DD.MM.YYYY, HH:MM
    pattern: str | None = None  # a regular expression the value must match
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    type: str | None = None  # integer, string, ...
    examples: tuple[str, ...] = ()  # example values the error gave (never copied into a rule)
    said: str = ""  # what the error said about this argument (data: quoted if ever shown)
    # where inside `argument` the error points, when deeper (``to.city`` for argument ``to``):
    # a parameter path (store/param_paths.py), item indexes dropped
    path: str | None = None

    @property
    def states_form(self) -> bool:
        return bool(self.forms or self.pattern or self.examples)


@dataclass(frozen=True)
class ToolFailure:
    """A tool result read as an error."""

    grammar: str
    message: str
    constraints: tuple[Constraint, ...] = ()
    tool: str | None = None

    @property
    def understood(self) -> bool:
        return any(c.argument for c in self.constraints)


class ErrorReader(Protocol):
    """One grammar: None when `result` is not an error in it."""

    name: str

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None: ...


# --- helpers -------------------------------------------------------------

_PLACEHOLDER = re.compile(r"(?<![\w])(?:[A-Z]{1,4}(?:[^\w\s'\"«»][A-Z]{1,4})+)(?![\w])")
_EXAMPLE = re.compile(r"\b(?:e\.g\.|for example|for instance|such as|like)\s*[:,]?\s*"
                      r"(['\"]?)([^\s,;'\")]+(?:\s*,\s*[^\s,;'\")]+)?)\1(?:\s+or\s+(['\"]?)([^\s,;'\")]+)\3)?",
                      re.IGNORECASE)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
# placeholder letters that stand for digits (dates and times)
_DIGIT_LETTERS = set("DMYHS")


def placeholder_regex(form: str) -> str | None:
    """``DD.MM.YYYY`` -> ``\\d{2}\\.\\d{2}\\.\\d{4}``; None when the letters are not digit places."""
    out = []
    for run in re.findall(r"[A-Z]+|[^A-Z]", form):
        if run.isalpha():
            if not set(run) <= _DIGIT_LETTERS:
                return None
            out.append(r"\d{1,2}" if len(run) == 1 else rf"\d{{{len(run)}}}")
        else:
            out.append(re.escape(run))
    return "".join(out)


def forms_in(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for f in _PLACEHOLDER.findall(text) if placeholder_regex(f)))


def examples_in(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for m in _EXAMPLE.finditer(text):
        out += [g for g in (m.group(2), m.group(4)) if g]
    return tuple(dict.fromkeys(e.strip(" .") for e in out if e.strip(" .")))


def _literal(text: str) -> Any:
    """A Python or JSON literal as printed in an error (``'a'``, ``12``); the text itself otherwise."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _arg_by_value(args: Args, value: Any) -> str | None:
    if value is None:
        return None
    return next((k for k, v in args.items() if v == value or (isinstance(v, str) and v == str(value))), None)


def _arg_named(args: Args, text: str, known: Sequence[str] = ()) -> str | None:
    names = list(dict.fromkeys([*args, *known]))
    return next((k for k in names if re.search(rf"(?<![\w]){re.escape(k)}(?![\w])", text)), None)


# --- pydantic v2 messages (also inside FastAPI 422 bodies) ----------------

def _pydantic_msg(arg: str | None, msg: str, value: Any, etype: str | None = None,
                  ctx: Mapping[str, Any] | None = None) -> Constraint:
    """One pydantic error (``msg``, with ``type`` and ``ctx`` when known) as a constraint."""
    ctx = ctx or {}
    m = re.match(r"String should match pattern '(.*)'$", msg)
    if (etype == "string_pattern_mismatch" and "pattern" in ctx) or m:
        pattern = str(ctx.get("pattern") or (m.group(1) if m else ""))
        return Constraint(arg, "form", value, pattern=pattern)
    if etype in ("literal_error", "enum") or msg.startswith("Input should be '"):
        expected = str(ctx.get("expected") or msg.removeprefix("Input should be "))
        choices = tuple(_literal(q.group(0)) for q in _QUOTED.finditer(expected))
        if choices:
            return Constraint(arg, "choice", value, choices=choices)
    bound = re.match(r"Input should be (greater|less) than( or equal to)? (-?[\d.]+)", msg)
    if bound:
        n = float(bound.group(3))
        return Constraint(arg, "range", value, minimum=n if bound.group(1) == "greater" else None,
                          maximum=n if bound.group(1) == "less" else None)
    if msg == "Field required" or etype == "missing":
        return Constraint(arg, "missing")
    if msg == "Extra inputs are not permitted" or etype == "extra_forbidden":
        return Constraint(arg, "unexpected", value)
    typed = re.match(r"Input should be a valid (\w+)", msg)
    if typed:
        return Constraint(arg, "type", value, type=typed.group(1))
    text = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return Constraint(arg, "form" if (forms_in(text) or examples_in(text)) else "other", value,
                      forms=forms_in(text), examples=examples_in(text), said=text)


_PYD_HEAD = re.compile(r"^\d+ validation errors? for \S+\s*$")
_PYD_LINE = re.compile(r"^\s{2}(.*?) \[type=(\w+), input_value=(.*?), input_type=\w+\]\s*$")


class PydanticReader:
    """``str(ValidationError)``: a head line, then per error the location and the message."""

    name = "pydantic"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        lines = result.strip().splitlines()
        start = next((i for i, line in enumerate(lines[:3]) if _PYD_HEAD.match(line.strip())), None)
        if start is None:
            return None
        out: list[Constraint] = []
        loc: str | None = None
        for line in lines[start + 1:]:
            m = _PYD_LINE.match(line)
            if m:
                arg = loc.split(".")[0] if loc else None
                value = _literal(m.group(3))
                if arg is None or arg not in args:
                    arg = arg if arg else _arg_by_value(args, value)
                out.append(_at(_pydantic_msg(arg, m.group(1), value, m.group(2)), loc))
            elif line and not line.startswith(" "):
                loc = line.strip()
        return ToolFailure(self.name, result.strip(), tuple(out), tool)


# --- jsonschema messages ----------------------------------------------------

_JS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], Constraint]]] = [
    (re.compile(r"^(.+) does not match (.+)$", re.DOTALL),
     lambda m: Constraint(None, "form", _literal(m.group(1)), pattern=str(_literal(m.group(2))))),
    (re.compile(r"^(.+) is not one of (\[.*\])$", re.DOTALL),
     lambda m: Constraint(None, "choice", _literal(m.group(1)), choices=tuple(_literal(m.group(2))))),
    (re.compile(r"^(.+) is not of type '(\w+)'"),
     lambda m: Constraint(None, "type", _literal(m.group(1)), type=m.group(2))),
    (re.compile(r"^(.+) is (less|greater) than the (minimum|maximum) of (-?[\d.]+)$"),
     lambda m: Constraint(None, "range", _literal(m.group(1)),
                          minimum=float(m.group(4)) if m.group(3) == "minimum" else None,
                          maximum=float(m.group(4)) if m.group(3) == "maximum" else None)),
    (re.compile(r"^'(\w+)' is a required property$"),
     lambda m: Constraint(m.group(1), "missing")),
    (re.compile(r"^Additional properties are not allowed \('(\w+)'.* unexpected\)$"),
     lambda m: Constraint(m.group(1), "unexpected")),
]
_JS_PATH = re.compile(r"^(?:at\s+)?(\$(?:\.[\w-]+|\[\d+\])*|/[\w/-]*|[a-z_][\w.]*)\s*:\s+(.+)$", re.DOTALL)


def _jsonschema_message(message: str, args: Args, path: str | None = None) -> Constraint | None:
    for pattern, make in _JS:
        m = pattern.match(message.strip())
        if m:
            c = make(m)
            arg = c.argument or _path_arg(path) or _arg_by_value(args, c.refused)
            return _at(replace(c, argument=arg), path)
    return None


def _path_arg(path: str | None) -> str | None:
    if not path:
        return None
    parts = [p for p in re.split(r"[./\[\]$#]+", path) if p and not p.isdigit()]
    return parts[0] if parts else None


def _deeper(path: str | None) -> str | None:
    """A location's parameter path when it names more than a top-level argument, else None."""
    names = parse_path(path.lstrip("#")) if path else ()
    return ".".join(names) if len(names) > 1 else None


def _at(c: Constraint, path: str | None) -> Constraint:
    deeper = _deeper(path)
    return replace(c, path=deeper) if deeper and _path_arg(deeper) == c.argument else c


class JsonSchemaReader:
    """A jsonschema `ValidationError.message`, maybe after its path (``$.date: '...' does not match ...``)."""

    name = "jsonschema"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        text = result.strip().removeprefix("error:").strip()
        found: list[Constraint] = []
        for line in text.splitlines():
            path = None
            m = _JS_PATH.match(line.strip())
            if m and _jsonschema_message(m.group(2), args) is not None:
                path, line = m.group(1), m.group(2)
            c = _jsonschema_message(line, args, path)
            if c is not None:
                found.append(c)
        return ToolFailure(self.name, text, tuple(found), tool) if found else None


# --- plain text -------------------------------------------------------------

_ERROR_HEAD = re.compile(r"^\s*(?:error|err|invalid|validation (?:error|failed)|bad request)\b[\s:,-]*",
                         re.IGNORECASE)
_MUST = re.compile(r"(?P<arg>[A-Za-z_][\w.]*)\s+(?:must|should|has to|needs to)\s+(?:be\s+)?(?P<rest>.+)",
                   re.IGNORECASE | re.DOTALL)
_GOT = re.compile(r"[,;(]?\s*\b(?:got|received|but was|instead of|not)\s+['\"]?(?P<value>[^'\"]+?)['\"]?\)?\.?$",
                  re.IGNORECASE)


def _text_constraint(text: str, args: Args, arg: str | None = None) -> Constraint | None:
    """A sentence about one argument: ``date must be DD.MM.YYYY, got 2026-11-27``."""
    text = text.strip()
    got = _GOT.search(text)
    refused: Any = got.group("value").strip() if got else None
    body = text[: got.start()] if got else text
    m = _MUST.search(body)
    arg = arg or (m.group("arg") if m and m.group("arg") in args else None) or _arg_named(args, body)
    if arg is None and refused is not None:
        arg = _arg_by_value(args, refused)
    if arg is None:
        return None
    if refused is None and arg in args and isinstance(args[arg], str) and args[arg] in text:
        refused = args[arg]
    if isinstance(refused, str) and arg in args and not isinstance(args[arg], str):
        refused = args[arg]
    forms, examples = forms_in(body), examples_in(body)
    choice = re.search(r"\bone of\s*[:(]?\s*(.+?)\)?$", body)
    if choice and not forms:
        options = [o.strip(" '\"") for o in re.split(r",\s*|\s+or\s+", choice.group(1)) if o.strip(" '\"")]
        return Constraint(arg, "choice", refused, choices=tuple(options))
    bounds = re.search(r"between (-?\d+) and (-?\d+)", body)
    if bounds:
        return Constraint(arg, "range", refused, minimum=float(bounds.group(1)),
                          maximum=float(bounds.group(2)))
    pattern = re.search(r"\bpattern\s+['\"]?(\^.+?\$)['\"]?(?:\s|$)", body)
    return Constraint(arg, "form" if (forms or examples or pattern) else "other", refused, forms=forms,
                      pattern=pattern.group(1) if pattern else None, examples=examples, said=body.strip(" ,;."))


class PlainTextReader:
    """Text that opens by saying it is an error (``error: ...``, ``Invalid ...``)."""

    name = "text"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        head = _ERROR_HEAD.match(result)
        if head is None:
            return None
        return read_message(result[head.end():].strip(), tool, args, grammar=self.name)


def read_message(message: str, tool: str, args: Args, *, grammar: str, param: str | None = None) -> ToolFailure:
    """An error's message (from an envelope, or plain text): the text readers, then sentences."""
    for reader in (PydanticReader(), JsonSchemaReader()):
        inner = reader.read(message, tool, args)
        if inner is not None and inner.constraints:
            cons = inner.constraints
            if param:
                cons = tuple(replace(c, argument=c.argument or param) for c in cons)
            return ToolFailure(f"{grammar}+{inner.grammar}", message, cons, tool)
    found = [c for part in re.split(r";\s+|\n", message) if (c := _text_constraint(part, args, param))]
    if not found and param:
        found = [Constraint(param, "other", args.get(param))]
    return ToolFailure(grammar, message, tuple(found), tool)


# --- JSON envelopes -----------------------------------------------------------

def _json(result: str) -> Any:
    text = result.strip()
    if text[:6].lower() == "error:":
        text = text[6:].strip()
    if not text.startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


class McpReader:
    """An MCP `CallToolResult` with ``isError: true``: its text content is the error."""

    name = "mcp"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        data = _json(result)
        if not isinstance(data, dict) or data.get("isError") is not True:
            return None
        texts = [str(c.get("text")) for c in data.get("content") or []
                 if isinstance(c, dict) and c.get("type") == "text" and c.get("text")]
        inner = "\n".join(texts)
        nested = read_error(inner, tool, args) if inner else None
        if nested is not None:
            return replace(nested, grammar=f"mcp+{nested.grammar}")
        return read_message(inner, tool, args, grammar=self.name)


def _loc_parts(loc: Any) -> list[str]:
    if isinstance(loc, list | tuple):
        return [str(p) for p in loc if not isinstance(p, int) and str(p) not in ("body", "query", "path")]
    return []


def _loc_arg(loc: Any) -> str | None:
    parts = _loc_parts(loc)
    return parts[0] if parts else None


class FastApiReader:
    """FastAPI's 422 body: ``{"detail": [{"loc": [...], "msg", "type", "input", "ctx"}]}``."""

    name = "fastapi"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        data = _json(result)
        detail = data.get("detail") if isinstance(data, dict) else None
        if not isinstance(detail, list) or not detail or not all(isinstance(d, dict) and "msg" in d
                                                                 for d in detail):
            return None
        cons = []
        for d in detail:
            arg = _loc_arg(d.get("loc"))
            ctx = d.get("ctx") if isinstance(d.get("ctx"), dict) else None
            c = _pydantic_msg(arg, str(d["msg"]), d.get("input"), str(d.get("type") or ""), ctx)
            cons.append(_at(c, ".".join(_loc_parts(d.get("loc")))))
        return ToolFailure(self.name, "; ".join(str(d["msg"]) for d in detail), tuple(cons), tool)


class ProblemJsonReader:
    """RFC 9457 problem details: ``title``/``status``/``detail``, with per-parameter lists."""

    name = "problem-json"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        data = _json(result)
        if not isinstance(data, dict) or not ({"title", "type"} & set(data)) or "status" not in data:
            return None
        cons: list[Constraint] = []
        for key in ("invalid-params", "invalid_params", "errors"):
            for item in data.get(key) or []:
                if not isinstance(item, dict):
                    continue
                arg = item.get("name") or item.get("param") or _path_arg(
                    str(item.get("pointer") or item.get("field") or "")) or None
                why = str(item.get("reason") or item.get("detail") or item.get("message") or "")
                c = _text_constraint(why, args, str(arg) if arg else None)
                if c is not None:
                    cons.append(_at(c, str(item.get("pointer") or item.get("field") or item.get("name") or "")))
        message = str(data.get("detail") or data.get("title"))
        if not cons:
            return read_message(message, tool, args, grammar=self.name)
        return ToolFailure(self.name, message, tuple(cons), tool)


class OpenAiErrorReader:
    """``{"error": {"message", "param", ...}}``, ``{"error": "..."}``, and HTTP-status JSON bodies."""

    name = "http-json"

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        data = _json(result)
        if not isinstance(data, dict):
            return None
        err = data.get("error")
        status = data.get("status") or data.get("statusCode") or data.get("code")
        if isinstance(err, dict) and err.get("message"):
            param = err.get("param") if isinstance(err.get("param"), str) else None
            return read_message(str(err["message"]), tool, args, grammar="openai", param=param)
        failed = isinstance(status, int) and status >= 400
        if isinstance(err, str) or failed:
            message = str(data.get("message") or data.get("detail") or err or data.get("title") or "")
            if not message:
                return None
            return read_message(message, tool, args, grammar=self.name,
                                param=data.get("param") if isinstance(data.get("param"), str) else None)
        return None


READERS: tuple[ErrorReader, ...] = (McpReader(), FastApiReader(), ProblemJsonReader(), OpenAiErrorReader(),
                                    PydanticReader(), JsonSchemaReader(), PlainTextReader())


def read_error(result: str, tool: str, args: Args, readers: Sequence[ErrorReader] = READERS) -> ToolFailure | None:
    """The first reader's reading of `result` as an error, or None: the call went through."""
    for reader in readers:
        found = reader.read(result, tool, args)
        if found is not None:
            # a constraint that does not repeat the refused value is about the value the call sent
            cons = tuple(replace(c, refused=args[c.argument])
                         if c.refused is None and c.argument is not None and c.argument in args
                         and c.kind != "missing" else c
                         for c in found.constraints)
            return replace(found, constraints=cons)
    return None


@dataclass
class Readers:
    """The readers a tenant's evolver uses (the defaults, or others a deployment adds in front)."""

    readers: list[ErrorReader] = field(default_factory=lambda: list(READERS))

    def read(self, result: str, tool: str, args: Args) -> ToolFailure | None:
        return read_error(result, tool, args, self.readers)
