"""Compat mode: behave like a local OpenAI-compatible server (not Upstage's API).

``compat="openai-local"`` (``Emulator(...)``'s ``configure``, ``POST /_emulator/config`` or a
request's ``"emulator"`` object) imitates a small local server (a vLLM/llama.cpp-style
FastAPI app) as issue 21 found one:

- ``response_format`` of type ``json_schema`` is refused with **HTTP 500** and a pydantic
  request-validation message (only ``text`` and ``json_object`` are accepted);
- ``GET /models`` lists one server-local name, ``local-model`` (the ``local_model`` setting);
  a chat request naming any model is answered by it (replies name it);
- streams never end with a usage chunk, even when ``stream_options.include_usage`` is asked
  (a plain, non-streaming reply still carries usage);
- like a model that follows its instructions, a ``json_object`` answer fits the JSON Schema
  the request carries in ``response_format.schema`` or shows in a message (the first JSON
  object there with ``properties`` or a ``type``).

Stdlib and the emulator's own modules only.
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from .api import ChatRequest, Model, Reject, check_request, text_of

COMPAT_MODES = (None, "openai-local")
LOCAL_MODEL = Model("local-model", "local-model", None, ("none", "minimal"))

#: What such a server answers (HTTP 500) for a json_schema response_format.
JSON_SCHEMA_REFUSAL = (
    "1 validation error for ChatCompletionRequest\nresponse_format.type\n"
    "  Input should be 'text' or 'json_object' [type=literal_error, input_value='json_schema', "
    "input_type=str]"
)


def local_models(name: str = LOCAL_MODEL.alias) -> list[dict[str, Any]]:
    """The ``GET /models`` data of a local server: its one model, by its local name."""
    return [{"id": name, "object": "model", "created": 0, "owned_by": "local"}]


def check_local_request(body: dict[str, Any], *, refused: list[str] | tuple[str, ...] = (),
                        name: str = LOCAL_MODEL.alias) -> ChatRequest:
    """Check a chat request as the local server does (raises Reject; json_schema: 500)."""
    rf = body.get("response_format")
    if isinstance(rf, dict) and rf.get("type") not in (None, "text", "json_object"):
        raise Reject(500, JSON_SCHEMA_REFUSAL, "server_error", "internal_error")
    # Any model name is served by the one local model; the body is otherwise checked as usual.
    req = check_request({**body, "model": "syn-pro"}, refused=refused)
    req = replace(req, model=replace(LOCAL_MODEL, alias=name, dated_id=name), include_usage=False)
    if req.response_format is not None:
        schema = rf.get("schema") if isinstance(rf, dict) else None
        schema = schema if isinstance(schema, dict) else _shown_schema(req.messages)
        if schema is not None:  # a model that follows the schema it was given
            req = replace(req, response_format={"type": "json_schema",
                                                "json_schema": {"name": "shown", "schema": schema}})
    return req


def _shown_schema(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first JSON object in the messages that looks like a JSON Schema."""
    decoder = json.JSONDecoder()
    for m in messages:
        text = text_of(m.get("content")) if isinstance(m, dict) else ""
        start = text.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(text, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and ("properties" in value or "type" in value):
                return value
            start = text.find("{", start + 1)
    return None
