"""Parameter paths: naming one parameter inside a tool's JSON Schema, reading and rewriting its description.

A path is the parameter's property names from the top, joined by dots:
``address.city``. Real schemas nest, and a path reads through all of it:

- ``$ref`` to a local JSON pointer (``#/$defs/Address``, ``#/definitions/Address``,
  ``#``); a ``$ref`` that is not local, or does not resolve, leads nowhere;
- ``allOf``/``anyOf``/``oneOf``: a property of any member (pydantic v2 writes
  ``Optional[X]`` as ``anyOf: [X, {"type": "null"}]``, a Union of models as
  ``anyOf`` of ``$ref``\\s);
- arrays: a name not found as a property is looked up in the items (``items``,
  tuple-form ``items`` and ``prefixItems``), so ``attendees.email`` is the
  email of every attendee. Item steps in a path (``attendees.0.email``,
  ``attendees[0].email``, ``$.attendees[*].email``, ``/attendees/0/email``,
  the locations validators report) are dropped: `canonical` spells the same
  parameter the same way. A property literally named with digits only is
  therefore not reachable, nor are ``additionalProperties``/``patternProperties``
  values (their keys are not names a schema states).

A path can name more than one schema (``pet.name`` when ``pet`` is a Union of
two models that both have ``name``): all of them are the parameter.

The parameter's description is what the model reads for it: the use site's
own ``description`` (the property's schema where it is named); where that has
none, the description of what it stands for: a ``$ref``'s definition, the one
non-null member of an ``Optional`` (``anyOf``/``oneOf`` with one other member),
the single member of an ``allOf``.

`set_description` writes where the model would read it, and changes nothing
that another parameter shares:

- it writes over the description it read where that lies at the use site, or
  in a definition that only this use reaches (the ``$ref`` to it is the only
  one in the schema, and the path did not reach it through itself);
- a description read from a definition that other uses share (or no
  description at all) is written at the use site, beside the ``$ref``
  (JSON Schema 2020-12 applies a ``$ref``'s siblings; pydantic v2 writes a
  field's description there too), so the other uses keep theirs;
- a path that runs *through* a shared definition (``home.city`` and
  ``work.city`` both in ``#/$defs/Address``) inlines a copy of that
  definition at the use site first (the ``$ref`` replaced by the definition's
  keywords; were a keyword on both, the copy goes under ``allOf`` instead),
  and writes in the copy: ``work.city`` keeps its description. Only the
  definitions the path passes through are inlined; ``$defs`` stay as they
  were.

All functions are pure on the JSON they are given except `set_description`,
which changes the schema in place (callers hand it a copy).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

COMBINATORS = ("allOf", "anyOf", "oneOf")
ANNOTATIONS = frozenset({"title", "description", "default", "examples", "deprecated", "readOnly",
                         "writeOnly", "$comment"})
_STEP = re.compile(r"[./\[\]]+")
_MAX_VIEW = 16  # hops through $ref/Optional wrappers when looking for a description (cycles stop here)

Node = dict[str, Any]
Route = tuple[int, ...]  # ids of the schemas a walk passed through (a $ref back to one is recursion)


def parse_path(path: str) -> tuple[str, ...]:
    """A path's property names: ``$.a[0].b``, ``a.0.b``, ``/a/0/b`` and ``a.b`` all give ``("a", "b")``."""
    text = path.strip().removeprefix("$")
    return tuple(p for p in _STEP.split(text) if p and p != "*" and not p.isdigit())


def canonical(path: str) -> str:
    """The one spelling of a path (``attendees[0].email`` -> ``attendees.email``)."""
    return ".".join(parse_path(path))


def resolve_ref(root: Any, ref: str) -> Node | None:
    """The schema a local ``$ref`` (a JSON pointer into `root`) names, or None."""
    if not ref.startswith("#"):
        return None
    node: Any = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~").replace("%25", "%")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node if isinstance(node, dict) else None


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for v in node.values():
            yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _shared(root: Node, target: Node, route: Route) -> bool:
    """Whether other uses reach `target` too: another $ref names it, it is the root, or it is recursive."""
    if target is root or id(target) in route:
        return True
    return sum(1 for r in _refs(root) if resolve_ref(root, r) is target) > 1


def _inline(node: Node, target: Node) -> None:
    """`node`'s $ref replaced by a copy of what it names (see the module doc)."""
    del node["$ref"]
    body = copy.deepcopy(target)
    if any(k in node and k not in ANNOTATIONS for k in body):
        members = node.get("allOf")
        node["allOf"] = [*(members if isinstance(members, list) else []), body]
        return
    for k, v in body.items():
        node.setdefault(k, v)


def _items(node: Node) -> list[Node]:
    out: list[Node] = []
    for key in ("items", "prefixItems"):
        v = node.get(key)
        out += [v] if isinstance(v, dict) else [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []
    return out


def _expand(root: Node, node: Node, names: tuple[str, ...], inline: bool, route: Route,
            guard: set[int]) -> list[tuple[Node, Route]]:
    """`node` and the schemas it stands for ($ref, combinator members), each with its route.

    With `inline`, a $ref to a shared definition that the rest of the path (`names`) reaches
    is inlined into `node` first. `guard`: the definitions this step already went through
    (grows as it goes: a cycle of $refs stops there)."""
    route = (*route, id(node))
    out = [(node, route)]
    ref = node.get("$ref")
    target = resolve_ref(root, ref) if isinstance(ref, str) else None
    if target is not None and id(target) not in guard:
        guard.add(id(target))
        if not inline:
            out += _expand(root, target, names, inline, route, guard)
        elif _walk(root, target, names, False, route, frozenset(guard)):
            if _shared(root, target, route):
                _inline(node, target)
                return _expand(root, node, names, inline, route[:-1], guard)
            out += _expand(root, target, names, inline, route, guard)
    for key in COMBINATORS:
        members = node.get(key)
        for sub in members if isinstance(members, list) else ():
            if isinstance(sub, dict):
                out += _expand(root, sub, names, inline, route, guard)
    return out


def _walk(root: Node, node: Node, names: tuple[str, ...], inline: bool, route: Route = (),
          guard: frozenset[int] = frozenset()) -> list[tuple[Node, Route]]:
    """The schemas at `names` below `node` (a property's own schema, where it is named), with routes."""
    if not names:
        return [(node, route)]
    name, rest = names[0], names[1:]
    found: list[tuple[Node, Route]] = []
    through = {*guard, id(node)}
    branches = _expand(root, node, names, inline, route, through)
    for b, r in branches:
        props = b.get("properties")
        sub = props.get(name) if isinstance(props, dict) else None
        if isinstance(sub, dict):
            found += _walk(root, sub, rest, inline, r)  # a name consumed: a new step, a new guard
    if not found:  # not a property here: a property of the items
        for b, r in branches:
            for item in _items(b):
                if id(item) not in through:
                    found += _walk(root, item, names, inline, r, frozenset({*through, id(b)}))
    unique: dict[int, tuple[Node, Route]] = {}
    for n, r in found:
        unique.setdefault(id(n), (n, r))
    return list(unique.values())


def _stands_for(root: Node, node: Node) -> Node | None:
    """What a schema without a description of its own stands for: its $ref, its Optional's member."""
    ref = node.get("$ref")
    if isinstance(ref, str):
        return resolve_ref(root, ref)
    for key in ("anyOf", "oneOf"):
        members = node.get(key)
        if isinstance(members, list):
            real = [m for m in members if isinstance(m, dict) and m.get("type") != "null"]
            if len(real) == 1 and len(members) == 2:
                return real[0]
    members = node.get("allOf")
    if isinstance(members, list) and len(members) == 1 and isinstance(members[0], dict):
        return members[0]
    return None


def _description_owner(root: Node, node: Node) -> Node | None:
    """The schema whose `description` the model reads for this use site (None: there is none)."""
    cur: Node | None = node
    for _ in range(_MAX_VIEW):
        if cur is None:
            return None
        if isinstance(cur.get("description"), str):
            return cur
        cur = _stands_for(root, cur)
    return None


def _described(root: Node, node: Node) -> str | None:
    owner = _description_owner(root, node)
    return owner["description"] if owner is not None else None


def find_params(parameters: Any, path: str) -> list[Node]:
    """Every use-site schema `path` names in `parameters` (empty: the tool offers no such parameter)."""
    names = parse_path(path)
    if not isinstance(parameters, dict) or not names:
        return []
    return [n for n, _ in _walk(parameters, parameters, names, False)]


def describe(parameters: Any, path: str) -> tuple[bool, str | None]:
    """(whether `path` names a parameter, the description the model reads for it: the first one's)."""
    found = find_params(parameters, path)
    if not found or not isinstance(parameters, dict):
        return False, None
    return True, _described(parameters, found[0])


def _write_target(root: Node, node: Node, route: Route) -> Node:
    """Where a new description for this use site goes: see the module doc."""
    cur: Node = node
    route = (*route, id(node))
    for _ in range(_MAX_VIEW):
        if isinstance(cur.get("description"), str):
            return cur
        ref = cur.get("$ref")
        nxt = _stands_for(root, cur)
        if nxt is None or (isinstance(ref, str) and _shared(root, nxt, route)):
            return node
        route = (*route, id(nxt))
        cur = nxt
    return node


def set_description(parameters: Any, path: str, description: str, *, base: str | None) -> int:
    """Write `description` for every schema `path` names whose description is `base`; how many were.

    Changes `parameters` in place, and only where it writes (a shared definition on the way is
    inlined only then)."""
    names = parse_path(path)
    if not isinstance(parameters, dict) or not names:
        return 0
    if not any(_described(parameters, n) == base for n, _ in _walk(parameters, parameters, names, False)):
        return 0
    written = 0
    for node, route in _walk(parameters, parameters, names, True):
        if _described(parameters, node) == base:
            _write_target(parameters, node, route)["description"] = description
            written += 1
    return written
