"""The TAFC pretraining examples: calls written the way molt's TAFC serves them strip back to the plan."""

from __future__ import annotations

import json
import random

from bench.policy.data import pretraining_example
from bench.toolworld.tools import tool_schemas
from proxy.tafc import ToolPlan, strip_arguments


def test_think_examples_strip_to_the_plain_calls_and_the_default_mixture_is_unchanged() -> None:
    plain = [pretraining_example(random.Random(s)).messages for s in range(20)]
    assert plain == [pretraining_example(random.Random(s), 0.0).messages for s in range(20)]

    rng = random.Random(7)
    names = {t["function"]["name"] for t in tool_schemas()}
    seen_wrapped = 0
    for _ in range(40):
        conv = pretraining_example(rng, 1.0)
        assert conv.tools is not None
        offered = {t["function"]["name"]: t["function"]["parameters"]["properties"] for t in conv.tools}
        assert set(offered) == names and all(next(iter(p)) == "think" for p in offered.values())
        for m in conv.messages:
            for tc in m.get("tool_calls") or []:
                fn = tc["function"]
                args = fn["arguments"]
                assert next(iter(args)) == "think" and args["think"]
                wrapped = {k for k, v in offered[fn["name"]].items()
                           if k != "think" and v.get("type") == "object" and "value" in v.get("properties", {})}
                seen_wrapped += len(wrapped & set(args))
                out = strip_arguments(json.dumps(args), ToolPlan("think", frozenset(wrapped)))
                stripped = json.loads(out.arguments)
                assert "think" not in stripped and out.flags == []
                assert all(not isinstance(v, dict) for v in stripped.values())
    assert seen_wrapped > 0  # parameter mode wrapped some values
