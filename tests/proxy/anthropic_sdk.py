"""The official anthropic SDK on both sides of molt's translators, without a network.

`sdk_body` is what the SDK sends for `messages.create(...)` (its own request
building); `sdk_final` and `sdk_events` are what the SDK makes of a response
body or an event stream (its own parsing and accumulation). An httpx2
`MockTransport` (the SDK uses httpx2) stands in for the wire only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2 as httpx

_OK = {"id": "msg_x", "type": "message", "role": "assistant", "model": "m", "content": [],
       "stop_reason": "end_turn", "stop_sequence": None,
       "usage": {"input_tokens": 1, "output_tokens": 1}}


def sdk_client(handler: Callable[[httpx.Request], httpx.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="k", base_url="http://sdk.test", max_retries=0,
                               http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def sdk_body(**params: Any) -> dict[str, Any]:
    """The JSON body the SDK posts to /v1/messages for these parameters."""
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=_OK)

    with sdk_client(handler) as client:
        client.messages.create(**params)
    return seen[0]


def sdk_message(body: dict[str, Any]) -> anthropic.types.Message:
    """A non-streamed response body as the SDK returns it."""
    with sdk_client(lambda _r: httpx.Response(200, json=body)) as client:
        return client.messages.create(model="m", max_tokens=10,
                                      messages=[{"role": "user", "content": "hi"}])


def _sse(events: bytes) -> Callable[[httpx.Request], httpx.Response]:
    return lambda _r: httpx.Response(200, content=events,
                                     headers={"content-type": "text/event-stream"})


def sdk_final(events: bytes) -> anthropic.types.Message:
    """The SDK's own accumulation of an event stream (`messages.stream(...).get_final_message()`)."""
    with sdk_client(_sse(events)) as client, client.messages.stream(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]) as stream:
        return stream.get_final_message()


def sdk_events(events: bytes) -> list[Any]:
    """The SDK's parsed raw events (`messages.create(stream=True)`)."""
    with sdk_client(_sse(events)) as client:
        return list(client.messages.create(model="m", max_tokens=10, stream=True,
                                           messages=[{"role": "user", "content": "hi"}]))
