"""The agent driver: an ordinary agent loop over the official `openai` SDK.

It plays a toolworld task against any OpenAI-compatible endpoint (molt, or a
real model directly): send messages and tools, run the returned tool calls in
toolworld, append the results, stop at a final answer or a step limit. It sends
MetaClaw's session headers and reports what the environment says only through
`POST /v1/feedback` (the verifier's score per turn and per session, and the
user's complaints as text). It never reads molt's internals.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from bench.toolworld import Episode, StepScore, Task


@dataclass
class EpisodeResult:
    task_id: str
    day: int
    template: str
    session_id: str
    success: bool
    step_accuracy: float
    score: float
    complaints: list[str]
    steps: int
    # every preference broken, voiced or not (``units=imperial``)
    violations: list[str] = field(default_factory=list)
    turn_ids: list[str] = field(default_factory=list)
    tool_errors: int = 0
    # Steps whose right call depends on a drifted (non-base) convention.
    affected_steps: int = 0
    affected_ok: int = 0
    # Steps whose right call is as on a base day (no drifted convention in it).
    unaffected_ok: int = 0
    # drift-affected steps by the drifts they depend on ("date=dmy", "date=dmy+reminder=15"):
    # [steps, right]
    by_drift: dict[str, list[int]] = field(default_factory=dict)
    error: str | None = None


def drift_counts(scores: Sequence[StepScore]) -> dict[str, list[int]]:
    """Drift-affected steps grouped by the drifts they depend on: {key: [steps, right]}."""
    out: dict[str, list[int]] = {}
    for st in scores:
        if st.affected:
            n = out.setdefault("+".join(st.drifts) or "?", [0, 0])
            n[0] += 1
            n[1] += int(st.ok)
    return out


class AgentDriver:
    """Plays tasks through `client`; `feedback=True` posts outcomes to `/feedback`."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        *,
        system_prompt: str,
        max_steps: int = 6,
        temperature: float = 0.0,
        max_tokens: int = 256,
        feedback: bool = True,
        errors: str = "toolworld",
        complaint_rate: float = 1.0,
        varied_complaints: bool = False,
        session_prefix: str | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.feedback = feedback
        # how the tools say no, and how the simulated user complains (`bench.toolworld.Episode`)
        self.errors = errors
        self.complaint_rate = complaint_rate
        self.varied_complaints = varied_complaints
        self.last_messages: list[dict[str, Any]] = []
        self.last_tools: list[dict[str, Any]] = []
        # Session ids: the prefix, the task and the n-th episode of this driver. Against its own
        # fresh molt the runner gives a fixed prefix, so a rerun sends the same ids (the trainer
        # holds sessions out by the agent's id); against a shared endpoint a random one, so runs
        # never continue each other's sessions.
        self.session_prefix = session_prefix if session_prefix is not None else f"{secrets.token_hex(4)}-"
        self._episodes = 0
        self._http = httpx.Client(
            base_url=str(client.base_url).rstrip("/"),
            headers={"Authorization": f"Bearer {client.api_key}"},
            timeout=60,
        )

    def close(self) -> None:
        self._http.close()

    def run(self, task: Task, *, extra_system: Sequence[str] = (), session_id: str | None = None,
            model: str | None = None, history: Sequence[dict[str, Any]] = ()) -> EpisodeResult:
        """Play one task. `extra_system` messages follow the agent's prompt (the oracle arm);
        `history`, earlier chat of the session, comes before the task's message (the ttt
        arm's in-context reference); `model` replaces the driver's for this task. The
        conversation is left in `last_messages`."""
        episode = Episode(task, errors=self.errors, complaint_rate=self.complaint_rate,
                          varied_complaints=self.varied_complaints)
        self._episodes += 1
        sid = session_id or f"tw-{self.session_prefix}{task.id}-{self._episodes}"
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system_prompt}]
        messages += [{"role": "system", "content": s} for s in extra_system]
        messages += [dict(m) for m in history]
        self.last_messages = messages
        self.last_tools = episode.tools
        messages.append({"role": "user", "content": task.user_message})
        turn_ids: list[str] = []
        molt_session: str | None = None
        turn_step_scores: list[tuple[str, list[bool]]] = []
        final = ""
        tool_errors = 0
        error: str | None = None
        for _ in range(self.max_steps):
            try:
                raw = self.client.chat.completions.with_raw_response.create(
                    model=model or self.model, messages=messages, tools=episode.tools,
                    temperature=self.temperature, max_tokens=self.max_tokens,
                    extra_headers={"X-Session-Id": sid, "X-Turn-Type": "main"},
                )
            except openai.APIError as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
            completion = raw.parse()
            turn_id = raw.headers.get("x-molt-turn-id")
            molt_session = molt_session or raw.headers.get("x-molt-session-id")
            if turn_id:
                turn_ids.append(turn_id)
            msg = completion.choices[0].message
            calls = msg.tool_calls or []
            if not calls:
                final = msg.content or ""
                break
            messages.append(msg.model_dump(exclude_none=True, exclude={"refusal", "annotations", "audio", "function_call"}))
            n_before = len(episode.step_scores)
            for call in calls:
                result = episode.call(call.function.name, call.function.arguments)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
            if turn_id:
                turn_step_scores.append((turn_id, [s.ok for s in episode.step_scores[n_before:]]))
        if final:
            messages.append({"role": "assistant", "content": final})
        outcome = episode.finish(final)
        tool_errors = episode.tool_errors
        if self.feedback and turn_ids:
            self._report(molt_session or sid, outcome.score if outcome.success else -1.0,
                         outcome.complaints, outcome.success, turn_step_scores)
        return EpisodeResult(
            task_id=task.id, day=task.day, template=task.template, session_id=sid,
            success=outcome.success, step_accuracy=outcome.step_accuracy, score=outcome.score,
            complaints=list(outcome.complaints), steps=len(episode.step_scores),
            violations=list(outcome.violations),
            turn_ids=turn_ids, tool_errors=tool_errors,
            affected_steps=sum(1 for st in episode.step_scores if st.affected),
            affected_ok=sum(1 for st in episode.step_scores if st.affected and st.ok),
            unaffected_ok=sum(1 for st in episode.step_scores if not st.affected and st.ok),
            by_drift=drift_counts(episode.step_scores),
            error=error,
        )

    def _report(self, session: str, score: float, complaints: list[str], success: bool,
                steps: list[tuple[str, list[bool]]]) -> None:
        # The session's outcome: what the environment and the user say.
        body: dict[str, Any] = {"score": max(-1.0, min(1.0, score)), "source": "verifier",
                                "meta": {"success": success}}
        if complaints:
            body["text"] = " ".join(complaints)
        self._post({**body, "session_id": session})
        # The step-level reward of each turn: the fraction of its calls that were right.
        for turn_id, oks in steps:
            if oks:
                self._post({"turn_id": turn_id, "score": 2 * sum(oks) / len(oks) - 1,
                            "source": "verifier"})

    def _post(self, body: dict[str, Any]) -> None:
        r = self._http.post("/feedback", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"feedback refused: {r.status_code} {r.text[:200]}")
