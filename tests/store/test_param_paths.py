"""Parameter paths through real schemas: pydantic v2's `model_json_schema()` and BFCL's corpus.

A rewrite lands where the model reads the parameter's description, the served schema
stays valid JSON Schema and accepts what the agent's accepted, and every other
parameter keeps its description.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from enum import Enum
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from store.param_paths import canonical, describe, find_params, parse_path, resolve_ref
from store.tool_params import Rewrite, apply_rewrites, param_description
from tests.proxy.test_tafc_corpus import functions

NEW = "Rewritten by molt: write it the way the tool accepts."


class Address(BaseModel):
    """A postal address."""

    city: str = Field(description="The city.")
    zip: str = Field(description="The postal code.")


class Person(BaseModel):
    name: str = Field(description="Full name.")
    email: str = Field(description="Their email.")


class Color(str, Enum):
    red = "red"
    blue = "blue"


class Cat(BaseModel):
    name: str = Field(description="The cat's name.")
    lives: int = 9


class Dog(BaseModel):
    name: str = Field(description="The dog's name.")
    good: bool = True


class Ship(BaseModel):  # nested model, used once
    to: Address
    weight: float = Field(description="Kilograms.")


class Move(BaseModel):  # nested model, used twice
    home: Address
    work: Address


class Meeting(BaseModel):  # list of models
    attendees: list[Person] = Field(description="Who comes.")
    title: str = Field(description="The title.")


class Profile(BaseModel):  # Optional fields
    nick: str | None = Field(None, description="A nickname.")
    address: Address | None = None
    email: str = Field(description="Their email.")


class Owner(BaseModel):  # Union of models
    pet: Cat | Dog
    owner: Person


class Paint(BaseModel):  # Literal and enum
    finish: Literal["matte", "gloss"] = Field(description="The finish.")
    color: Color
    shade: Color = Field(description="The shade.")


class Tree(BaseModel):  # recursive
    label: str = Field(description="The node's label.")
    children: list[Tree] = []


# model, path, the description read, where the rewrite lands (JSON pointer), an unrelated path
CASES: list[tuple[type[BaseModel], str, str | None, str, str]] = [
    (Ship, "to.city", "The city.", "/$defs/Address/properties/city", "weight"),
    (Ship, "to", "A postal address.", "/$defs/Address", "to.city"),
    (Move, "home.city", "The city.", "/properties/home/properties/city", "work.city"),
    (Move, "work", "A postal address.", "/properties/work", "home"),
    (Meeting, "attendees.email", "Their email.", "/$defs/Person/properties/email", "attendees.name"),
    (Meeting, "attendees[0].email", "Their email.", "/$defs/Person/properties/email", "title"),
    (Meeting, "attendees", "Who comes.", "/properties/attendees", "attendees.email"),
    (Profile, "nick", "A nickname.", "/properties/nick", "email"),
    (Profile, "address", "A postal address.", "/$defs/Address", "address.city"),
    (Profile, "address.zip", "The postal code.", "/$defs/Address/properties/zip", "address.city"),
    (Owner, "owner.email", "Their email.", "/$defs/Person/properties/email", "owner.name"),
    (Owner, "pet.lives", None, "/$defs/Cat/properties/lives", "pet.name"),
    (Paint, "finish", "The finish.", "/properties/finish", "shade"),
    (Paint, "color", None, "/properties/color", "shade"),
    (Paint, "shade", "The shade.", "/properties/shade", "color"),
    (Tree, "children.label", "The node's label.", "/properties/children/items/properties/label", "label"),
]


def _at(schema: Any, pointer: str) -> Any:
    node = resolve_ref(schema, "#" + pointer)
    assert node is not None, pointer
    return node


def _tools(name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": name, "parameters": parameters}},
            {"type": "function", "function": {"name": "other", "parameters": copy.deepcopy(parameters)}}]


def _served(tools: list[Any], path: str, base: str | None, *, check: bool = True) -> dict[str, Any]:
    original = copy.deepcopy(tools)
    out, applied = apply_rewrites(tools, [Rewrite("t", path, NEW, base)])
    assert tools == original  # the agent's list is not mutated
    assert [(r.tool, r.param) for r in applied] == [("t", path)]
    assert out[1] is tools[1]  # another tool with the same schema is untouched
    served: dict[str, Any] = out[0]["function"]["parameters"]
    if check:
        jsonschema.Draft202012Validator.check_schema(served)
    return served


@pytest.mark.parametrize(("model", "path", "base", "lands", "unrelated"), CASES,
                         ids=[f"{m.__name__}:{p}" for m, p, *_ in CASES])
def test_a_rewrite_lands_where_the_model_reads_it(model: type[BaseModel], path: str, base: str | None,
                                                  lands: str, unrelated: str) -> None:
    schema = model.model_json_schema()
    tools = _tools("t", schema)
    assert param_description(tools, "t", path) == (True, base)
    before = param_description(tools, "t", unrelated)
    served = _served(tools, path, base)

    assert _at(served, lands)["description"] == NEW
    assert param_description([{"type": "function", "function": {"name": "t", "parameters": served}}],
                             "t", path) == (True, NEW)
    assert describe(served, unrelated) == before
    assert served["$defs" if "$defs" in schema else "properties"].keys() == \
        schema["$defs" if "$defs" in schema else "properties"].keys()


def test_a_shared_definition_is_inlined_only_at_the_use_site_and_still_validates() -> None:
    schema = Move.model_json_schema()
    served = _served(_tools("t", schema), "home.city", "The city.")
    assert served["$defs"] == schema["$defs"]  # the definition work still uses is as it was
    assert served["properties"]["work"] == {"$ref": "#/$defs/Address"}
    assert "$ref" not in served["properties"]["home"]
    v = jsonschema.Draft202012Validator(served)
    good = Move(home=Address(city="Oslo", zip="0150"), work=Address(city="Bergen", zip="5003"))
    assert v.is_valid(good.model_dump(mode="json"))
    assert not v.is_valid({"home": {"city": "Oslo"}, "work": good.work.model_dump()})  # zip still required


def test_a_union_rewrites_every_member_that_has_the_parameter_and_its_base() -> None:
    schema = Owner.model_json_schema()
    assert len(find_params(schema, "pet.name")) == 2
    assert describe(schema, "pet.name") == (True, "The cat's name.")  # the first one's
    served = _served(_tools("t", schema), "pet.name", "The cat's name.")
    assert served["$defs"]["Cat"]["properties"]["name"]["description"] == NEW
    assert served["$defs"]["Dog"]["properties"]["name"]["description"] == "The dog's name."  # its own base


def test_a_rewrite_over_a_description_the_agent_no_longer_sends_is_not_laid() -> None:
    tools = _tools("t", Meeting.model_json_schema())
    out, applied = apply_rewrites(tools, [Rewrite("t", "attendees.email", NEW, "An older description.")])
    assert applied == [] and out[0] is tools[0]


def test_path_spellings_name_the_same_parameter() -> None:
    assert parse_path("$.attendees[0].email") == ("attendees", "email")
    assert parse_path("/attendees/0/email") == ("attendees", "email")
    assert canonical("attendees.0.email") == canonical("attendees[*].email") == "attendees.email"
    assert describe(Meeting.model_json_schema(), "attendees.phone") == (False, None)
    assert describe({"type": "object", "properties": {"a": {"$ref": "https://example.com/a.json"}}},
                    "a.b") == (False, None)


# --- BFCL: thousands of real function definitions -----------------------------------------

def _paths(schema: Any, prefix: str = "") -> Iterator[str]:
    """Every parameter path of a plain schema (properties, and properties of array items)."""
    if not isinstance(schema, dict):
        return
    props = schema.get("properties")
    for name, sub in (props.items() if isinstance(props, dict) else ()):
        if isinstance(sub, dict) and "." not in name and not name.isdigit():
            path = f"{prefix}{name}"
            yield path
            yield from _paths(sub, path + ".")
    items = schema.get("items")
    if isinstance(items, dict) and not prefix.endswith("]."):
        yield from _paths(items, prefix)


def test_every_bfcl_parameter_takes_a_rewrite_and_nothing_else_changes() -> None:
    checked = nested = 0
    for fn in functions():
        params = fn["parameters"]
        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError:
            continue  # a few definitions are not valid JSON Schema to begin with
        paths = list(dict.fromkeys(_paths(params)))
        if not paths:
            continue
        tools = _tools("t", params)
        own = {p: describe(params, p) for p in paths}
        for path in paths:
            offered, base = own[path]
            assert offered, (fn["name"], path)
            served = _served(tools, path, base, check=False)  # checked below, all rewrites at once
            assert describe(served, path) == (True, NEW)
            [node] = find_params(served, path)  # plain schemas: no inlining, one place changed
            if base is None:
                del node["description"]
            else:
                node["description"] = base
            assert served == params, (fn["name"], path)
            checked += 1
            nested += "." in path
        out, applied = apply_rewrites(tools, [Rewrite("t", p, NEW, own[p][1]) for p in paths])
        assert len(applied) == len(paths)
        jsonschema.Draft202012Validator.check_schema(out[0]["function"]["parameters"])
        assert all(describe(out[0]["function"]["parameters"], p) == (True, NEW) for p in paths)
    assert checked > 5000 and nested > 300, (checked, nested)
    print(json.dumps({"bfcl_parameters_rewritten": checked, "nested": nested}))
