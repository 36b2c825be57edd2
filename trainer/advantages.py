"""The steps of a completion, and per-token advantages from step rewards (process supervision).

Steps (our instantiation; the papers score "steps" without defining them for tool use):
- every valid tool call (`<tool_call>{...}</tool_call>`, modeling/toolcalls.py) is one step,
  and the text before it (since the previous call) belongs to it: its lead-in;
- text after the last call that is not whitespace is one more step, the reply;
- a completion without a valid call is one step, the reply.
An invalid call block is text. Tokens past the last step's end (EOS, whitespace) belong to
the last step. A recorded assistant message (content, tool_calls) has its content first
(the chat template renders it before the calls), so its steps are its calls, or one reply.

Advantages (DeepSeekMath, process supervision): within a group (the G completions of one
context), every step reward of every completion is normalised by the mean and standard
deviation of all rewarded steps of the group, r~ = (r - mean) / (std + eps). A token's
advantage is the sum of r~ over its own step and the later steps of its completion. A step
without a reward (None) is left out of the statistics and adds 0. A group whose step
rewards do not vary (fewer than two rewarded steps, or std <= tol) carries no signal and is
skipped: all its advantages are 0 and the caller drops it from the loss.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modeling.toolcalls import CALL_CLOSE, CALL_OPEN, decode_call

JSON = dict[str, Any]

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)" + re.escape(CALL_CLOSE), re.DOTALL)


@dataclass(frozen=True, slots=True)
class StepSpan:
    """One step of a completion: where it ends in the text, and its call (None: the reply)."""

    end: int
    call: JSON | None
    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """A completion as an assistant message plus its steps."""

    text: str
    message: JSON
    steps: tuple[StepSpan, ...]


def parse_completion(text: str) -> Completion:
    """Split generated text into steps and the assistant message serving would return."""
    steps: list[StepSpan] = []
    calls: list[JSON] = []
    plain: list[str] = []
    start = pos = 0
    for m in _BLOCK.finditer(text):
        call = decode_call(m.group(1))
        if call is None:
            continue
        plain.append(text[pos:m.start()])
        pos = m.end()
        steps.append(StepSpan(m.end(), call.openai(), text[start:m.end()]))
        calls.append(call.openai())
        start = m.end()
    tail = text[start:]
    plain.append(text[pos:])
    if tail.strip() or not steps:
        steps.append(StepSpan(len(text), None, tail))
    content = "".join(plain).strip()
    message: JSON = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    return Completion(text, message, tuple(steps))


def call_block(call: Mapping[str, Any]) -> str:
    """A call written as the model writes it (the inverse of modeling/toolcalls.py)."""
    fn = call.get("function") or {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    body = json.dumps({"name": fn.get("name"), "arguments": args}, ensure_ascii=False)
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"


def message_steps(message: Mapping[str, Any]) -> Completion:
    """The steps of a recorded assistant message: its calls, or one reply.

    Its text is the content followed by the calls, as the chat template renders it.
    """
    calls = [dict(c) for c in message.get("tool_calls") or []]
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    if not calls:
        return Completion(text, dict(message), (StepSpan(len(text), None, text),))
    steps = []
    start = 0
    for c in calls:
        block = call_block(c)
        steps.append(StepSpan(len(text) + len(block), c, text[start:] + block))
        start = len(text) + len(block)
        text += block
    return Completion(text, dict(message), tuple(steps))


def token_steps(ends: Sequence[int], token_starts: Sequence[int]) -> list[int]:
    """The step index of every token, given each token's first character offset."""
    out: list[int] = []
    last = max(len(ends) - 1, 0)
    k = 0
    for start in token_starts:
        while k < last and start >= ends[k]:
            k += 1
        out.append(k)
    return out


def token_starts(decode: Callable[[list[int]], str], ids: Sequence[int]) -> list[int]:
    """Character offset at which each token starts in `decode(ids)` (prefix decoding)."""
    return [len(decode(list(ids[:i]))) for i in range(len(ids))]


@dataclass(frozen=True, slots=True)
class GroupAdvantages:
    """Per completion, per step: the summed normalised reward of that step and later ones."""

    steps: list[list[float]]
    skipped: list[bool]  # one flag per group


def process_advantages(
    step_rewards: Sequence[Sequence[float | None]], group_size: int, *, eps: float = 1e-4,
    tol: float = 1e-6,
) -> GroupAdvantages:
    """Normalise step rewards within each group of `group_size` consecutive completions."""
    if group_size < 1 or len(step_rewards) % group_size:
        raise ValueError(f"{len(step_rewards)} completions do not form groups of {group_size}")
    out: list[list[float]] = []
    skipped: list[bool] = []
    for g in range(0, len(step_rewards), group_size):
        group = step_rewards[g:g + group_size]
        values = [r for rs in group for r in rs if r is not None and not math.isnan(r)]
        mean = sum(values) / len(values) if values else 0.0
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        std = math.sqrt(var)
        skip = len(values) < 2 or std <= tol
        skipped.append(skip)
        for rs in group:
            norm = [0.0 if skip or r is None or math.isnan(r) else (r - mean) / (std + eps) for r in rs]
            out.append(_suffix_sums(norm))
    return GroupAdvantages(out, skipped)


def _suffix_sums(values: Sequence[float]) -> list[float]:
    acc = 0.0
    out = [0.0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        acc += values[i]
        out[i] = acc
    return out


def token_advantages(step_adv: Sequence[float], steps_of_tokens: Sequence[int]) -> list[float]:
    """Each token's advantage: the advantage of the step it belongs to."""
    if not step_adv:
        return [0.0] * len(steps_of_tokens)
    return [step_adv[min(k, len(step_adv) - 1)] for k in steps_of_tokens]
