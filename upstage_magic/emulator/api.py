"""The Upstage chat API's facts and request checks, as ``UPSTAGE_API.md`` states them (checked 2026-12).

Stated here, never taken from the client's model table: a wrong entry there must fail a test.

- **Models**: ``GET /models`` lists today's ids, aliases then dated ids (solar-pro4,
  solar-mini4, syn-pro, solar-pro3), not retired ones. Replies name the dated id
  (``"model": "solar-pro4-260806"``). A retired model (solar-pro2, solar-mini, ...) gets
  400 ``model_retired`` naming the replacement; an unknown one 404 ``model_not_found``.
- **Reasoning**: solar-pro3 reasons by default (effort medium; ``low`` turns it off);
  solar-pro4 / solar-mini4 only with ``reasoning_effort`` low..max (none/minimal: off);
  syn-pro (unverified) accepts any effort of ``EFFORTS`` and reasons for low..max. An effort
  the model does not take gets 400 (``param: "reasoning_effort"``, naming the accepted values).
- **Refused like the real API (400)**: ``store``; role ``developer``;
  ``tools[].function.strict``; ``n`` > 1 with ``stream``; ``response_format`` json_object
  without the word "JSON" in the messages; a json_schema without ``name`` and ``schema``;
  ``tool_choice`` without ``tools`` or naming a function not in ``tools``. Errors come in the
  OpenAI-style envelope ``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

#: Fixed ``created`` timestamp in every reply (determinism).
CREATED = 1_754_000_000

#: Every ``reasoning_effort`` value a current model accepts, weakest first.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


@dataclass(frozen=True)
class Model:
    """A model the API serves; ``efforts`` None: unverified (any of ``EFFORTS``, ``off`` turn reasoning off)."""

    alias: str
    dated_id: str
    efforts: tuple[str, ...] | None
    off: tuple[str, ...]
    default_effort: str | None = None  # it reasons when sent no effort, with this one


#: The models the API serves, current first.
SERVED = (
    Model("solar-pro4", "solar-pro4-260806", EFFORTS, ("none", "minimal")),
    Model("solar-mini4", "solar-mini4-260922", EFFORTS, ("none", "minimal")),
    Model("syn-pro", "syn-pro-251021", None, ("none", "minimal")),
    Model("solar-pro3", "solar-pro3-260323", ("low", "medium", "high"), ("low",), default_effort="medium"),
)
_GONE = "was retired on 2026-10-30; use solar-pro4."
_LEGACY = "is a legacy name Upstage no longer serves; use "
#: Names the API refuses with 400 ``model_retired``: name -> the rest of the notice.
RETIRED = {
    "solar-pro2": _GONE, "solar-pro2-251215": _GONE,
    "solar-mini": _LEGACY + "solar-mini4.", "solar-pro": _LEGACY + "solar-pro4.",
    "solar-1-mini-chat": _LEGACY + "solar-mini4.", "solar-1-mini-chat-ja": _LEGACY + "solar-mini4.",
}
#: Models ``GET /models`` lists: alias -> dated id (both are accepted; replies name the dated id).
MODELS: dict[str, str] = {m.alias: m.dated_id for m in SERVED}
_BY_NAME = {name: m for m in SERVED for name in (m.alias, m.dated_id)}
ROLES = ("system", "user", "assistant", "tool")

STATUS_DEFAULTS = {
    400: ("Bad request.", "invalid_request_error", "bad_request"),
    401: ("Invalid API key.", "authentication_error", "invalid_api_key"),
    403: ("Your key has no access to this resource.", "permission_error", "forbidden"),
    404: ("Not found.", "invalid_request_error", "not_found"),
    422: ("Unprocessable request.", "invalid_request_error", "unprocessable"),
    429: ("Rate limit reached for requests. Please retry later.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request.", "server_error", "internal_error"),
    502: ("Bad gateway.", "server_error", "bad_gateway"),
    503: ("The engine is currently overloaded, please try again later.", "server_error", "overloaded"),
}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict:
    """The API's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class Reject(Exception):
    """An HTTP error reply (raised inside request handling)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.response = web.json_response(error_body(message, type_, code, param), status=status)


def resolve_model(name: Any) -> str | None:
    """Alias or dated id -> the dated id replies name; None for unknown or retired models."""
    model = _BY_NAME.get(name) if isinstance(name, str) else None
    return model.dated_id if model else None


def reasons(model: Model, effort: str | None) -> bool:
    """Whether the model reasons with this (accepted) effort; sent none, by its default."""
    return model.default_effort is not None if effort is None else effort not in model.off


def text_of(content: Any) -> str:
    """Text of a message's content (a string or a list of OpenAI content parts)."""
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return content if isinstance(content, str) else ""


def word_count(messages: list[Any]) -> int:
    """The emulator's prompt tokens: the words of the messages' text."""
    return sum(len(text_of(m.get("content")).split()) for m in messages if isinstance(m, dict))


def is_count(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class ChatRequest:
    """A chat request body that passed the API's checks."""

    messages: list[dict[str, Any]]
    model: Model
    stream: bool
    n: int
    include_usage: bool
    effort: str | None
    response_format: dict[str, Any] | None
    tools: list[dict[str, Any]]
    tool_choice: Any
    max_tokens: int | None
    stop: Any


def check_request(body: dict[str, Any], *, refused: list[str] | tuple[str, ...] = ()) -> ChatRequest:
    """Check a chat request body as the API does (raises Reject); ``refused``: more fields to refuse."""
    for name in ("store", *refused):
        if name in body:
            raise Reject(400, f"Unsupported parameter: '{name}' is not supported by this API; remove it.",
                         code="unsupported_parameter", param=name)
    messages = _check_messages(body.get("messages"))
    stream = bool(body.get("stream", False))
    n = body.get("n", 1)
    if n is not None and not is_count(n, 1):
        raise Reject(400, "'n' must be a positive integer.", param="n")
    if stream and n not in (1, None):
        raise Reject(400, "'n' must be 1 when streaming.", param="n")
    include_usage = _check_stream_options(body.get("stream_options")) if stream else False
    model = _check_model(body)
    effort = _check_effort(model, body.get("reasoning_effort"))
    rf = _check_response_format(body.get("response_format"), messages)
    tools = _check_tools(body.get("tools"), body.get("tool_choice"))
    max_tokens = body.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise Reject(400, "'max_tokens' must be a positive integer.", param="max_tokens")
    return ChatRequest(messages, model, stream, n or 1, include_usage, effort, rf, tools,
                       body.get("tool_choice"), max_tokens, body.get("stop"))


def _check_model(body: dict[str, Any]) -> Model:
    """The served model the body names (400 when missing or retired, 404 when unknown)."""
    if "model" not in body:
        raise Reject(400, "'model' is required.", param="model")
    name = body["model"]
    if isinstance(name, str) and name in RETIRED:
        raise Reject(400, f"{name} {RETIRED[name]}", code="model_retired", param="model")
    model = _BY_NAME.get(name) if isinstance(name, str) else None
    if model is None:
        raise Reject(404, f"The model `{name}` does not exist or you do not have access to it.",
                     code="model_not_found", param="model")
    return model


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    """Messages must be a non-empty list with known roles (``developer`` is refused)."""
    if not isinstance(messages, list) or not messages:
        raise Reject(400, "'messages' must be a non-empty list.", param="messages")
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            why = "role 'developer' is not supported; use 'system'" if role == "developer" else (
                f"invalid role {role!r}; use one of {', '.join(ROLES)}")
            raise Reject(400, f"messages[{i}]: {why}.", param=f"messages[{i}].role")
    return messages


def _check_stream_options(options: Any) -> bool:
    """Whether a streaming request asked for usage (``stream_options.include_usage``)."""
    if options is None:
        return False
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise Reject(400, "'stream_options' must be an object like {\"include_usage\": true}.", param="stream_options")
    return bool(options.get("include_usage"))


def _check_effort(model: Model, effort: Any) -> str | None:
    """The request's reasoning_effort, refused (400) when the model does not take it."""
    if effort is None:
        return None
    if not isinstance(effort, str):
        raise Reject(400, "'reasoning_effort' must be a string.", param="reasoning_effort")
    if model.efforts is None and effort not in EFFORTS:  # unverified: the values some model takes
        raise Reject(400, f"Invalid reasoning_effort {effort!r}; use one of {', '.join(EFFORTS)}.", param="reasoning_effort")
    if model.efforts is not None and effort not in model.efforts:
        raise Reject(400, f"{model.alias} does not accept reasoning_effort {effort!r}; use "
                     f"{_or_list(model.efforts)} ({_or_list(model.off)} turns reasoning off).", param="reasoning_effort")
    return effort


def _or_list(values: tuple[str, ...]) -> str:
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _check_response_format(rf: Any, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON response_format asked for (None for plain text); 400 when malformed."""
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise Reject(400, "'response_format.type' must be 'text', 'json_object' or 'json_schema'.", param="response_format")
    assert isinstance(rf, dict)
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not (isinstance(js, dict) and isinstance(js.get("name"), str) and js["name"]
                and isinstance(js.get("schema"), dict)):
            raise Reject(400, "'response_format.json_schema' must be an object with a 'name' and a "
                         "'schema' (a JSON Schema object).", param="response_format.json_schema")
    elif "json" not in " ".join(text_of(m.get("content")) for m in messages).lower():
        raise Reject(400, "'messages' must contain the word 'json' in some form, to use 'response_format' "
                     "of type 'json_object'.", param="messages")
    return rf


def _check_tools(tools: Any, tool_choice: Any) -> list[dict[str, Any]]:
    """The request's function tools (400 for a malformed list, ``strict`` or a bad tool_choice)."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise Reject(400, "'tool_choice' is only allowed when 'tools' are given.", param="tool_choice")
        return []
    if not isinstance(tools, list):
        raise Reject(400, "'tools' must be a list.", param="tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not (isinstance(tool, dict) and tool.get("type") == "function" and isinstance(fn, dict)
                and isinstance(fn.get("name"), str) and fn["name"]):
            raise Reject(400, f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}.",
                         param=f"tools[{i}]")
        if "strict" in fn:
            raise Reject(400, f"Unsupported parameter: 'tools[{i}].function.strict' is not supported by "
                         "this API; remove it.", code="unsupported_parameter", param=f"tools[{i}].function.strict")
    if tool_choice in (None, "none", "auto", "required"):
        return tools
    forced = tool_choice.get("function") if isinstance(tool_choice, dict) else None
    name = forced.get("name") if isinstance(forced, dict) else None
    if not isinstance(name, str):
        raise Reject(400, "'tool_choice' must be 'none', 'auto', 'required' or "
                     "{\"type\": \"function\", \"function\": {\"name\": ...}}.", param="tool_choice")
    if name not in [t["function"]["name"] for t in tools]:
        raise Reject(400, f"'tool_choice' names the function {name!r}, which is not in 'tools'.", param="tool_choice")
    return tools
