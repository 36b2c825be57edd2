"""A fake vLLM OpenAI server with runtime LoRA updating, on loopback.

Implements the documented adapter endpoints (`POST /v1/load_lora_adapter`
with `lora_name` and `lora_path`, `POST /v1/unload_lora_adapter` with
`lora_name`) and chat completions whose `model` must be the base model or a
loaded adapter; the reply says which one served it. Every adapter call is
recorded in `calls`; `chunk_delay_s` slows streams so tests can swap mid-stream.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"object": "error", "message": message, "type": "BadRequestError",
                         "param": None, "code": status}, status_code=status)


class FakeVLLM:
    def __init__(self, base_model: str) -> None:
        self.base_model = base_model
        self.loaded: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.served: list[str] = []
        self.chunk_delay_s = 0.0
        self.app = Starlette(routes=[
            Route("/v1/load_lora_adapter", self._load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", self._unload, methods=["POST"]),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
        ])

    async def _load(self, request: Request) -> Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error("lora_name and lora_path are required", 400)
        if name in self.loaded:
            return _error(f"The lora adapter '{name}' has already been loaded.", 400)
        if not (Path(path) / "adapter_config.json").is_file():
            return _error(f"No adapter found for {path}", 400)
        self.loaded[name] = path
        self.calls.append(("load", name))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload(self, request: Request) -> Response:
        name = (await request.json()).get("lora_name")
        if name not in self.loaded:
            return _error(f"The lora adapter '{name}' cannot be found.", 404)
        del self.loaded[name]
        self.calls.append(("unload", name))
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    async def _models(self, _req: Request) -> Response:
        ids = [self.base_model, *self.loaded]
        return JSONResponse({"object": "list", "data": [{"id": i, "object": "model"} for i in ids]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        model = body.get("model")
        if model != self.base_model and model not in self.loaded:
            return _error(f"The model `{model}` does not exist.", 404)
        self.served.append(model)
        text = f"served by {model}"
        head = {"id": "chatcmpl-vllm", "created": 1700000000, "model": model}
        if not body.get("stream"):
            return JSONResponse({**head, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text},
                 "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})

        async def gen() -> Any:
            pieces = [{"role": "assistant", "content": ""}] + [
                {"content": w if i == 0 else " " + w} for i, w in enumerate(text.split(" "))]
            for delta in pieces:
                chunk = {**head, "object": "chat.completion.chunk",
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
                await asyncio.sleep(self.chunk_delay_s)
            end = {**head, "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode()

        return StreamingResponse(gen(), media_type="text/event-stream")
