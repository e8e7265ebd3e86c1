"""What the emulator answers: canned replies, tokens, reasoning text, schema examples, tool calls.

- ``reply``: ``"markdown"`` (heading, list, python code block, "You asked: <last user
  message>", "Turn N"), ``"echo"`` (the last user message), ``"hostile"`` (``HOSTILE_REPLY``:
  raw HTML/JS that a front end must neutralise), ``"code"`` (one fenced python block),
  ``"tool_call"`` / ``"tool_calls"`` (below; markdown when the request has no tools), or any
  other string (sent as is). ``answer_tokens=N``: N filler tokens (``filler_text``).
- Tokens are the pieces of ``tokenize(text)``. ``max_tokens`` counts reasoning and answer
  together (finish_reason "length"); ``stop`` cuts the answer before the first stop string.
- **Reasoning** (by model and effort, see ``api``, unless the ``reasoning`` setting forces it):
  low: 8 tokens, medium: ``REASONING_TEXT``, high/xhigh/max: 2x/3x/4x; ``reasoning_tokens=N``:
  exactly N; ``reasoning_field: "think"`` sends it as ``<think>...</think>`` opening the content.
- **Structured output**: json_object gives a JSON object; json_schema an example that fits it.
- **Tool calls**: when the request has ``tools`` and ``tool_choice`` forces a call
  (``"required"`` or a named function), or ``reply`` is ``"tool_call"`` (call the first or
  forced tool) or ``"tool_calls"`` (call every tool, indexes 0..n-1), the answer is a tool
  call whose arguments fit the parameters schema. ``tool_choice: "none"`` never calls.
  Otherwise, when the request offers tools and the last user message names one or more of
  them (as a word), the answer calls each of those (several calls in one answer). When the
  messages end with ``tool`` results, the answer is text quoting them (``TOOL_ANSWER``), so
  a tool loop ends; only a forced call (``tool_choice``, ``reply: "tool_call"``) calls again.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .api import ChatRequest, reasons, text_of, word_count

MARKDOWN_REPLY_TEMPLATE = """\
## Answer from the Upstage emulator

You asked: {prompt}

Turn {turn}

This offline emulator answers with canned text, so you can try things out:

- **Bold**, *italic* and `inline code`
- A link to the [Upstage console](https://console.upstage.ai)
- Math stays as written: $e^{{i\\pi}} + 1 = 0$

```python
def greet(name: str) -> str:
    return f"Hello, {{name}}!"
```

Point UPSTAGE_BASE_URL at https://api.upstage.ai/v1 for real answers.
"""

CODE_REPLY = """\
```python
import math

def area(radius: float) -> float:
    return math.pi * radius ** 2

print(area(2.0))
```
"""

#: Window flags set by the hostile reply if a front end ever executes it.
HOSTILE_FLAGS = ("__pwned_script", "__pwned_img", "__pwned_link", "__pwned_iframe")

HOSTILE_REPLY = """\
Hostile test answer: everything below must show as text and never run.

<script>window.__pwned_script=1</script>

<img src=x onerror="window.__pwned_img=1">

[click me](javascript:window.__pwned_link=1)

<iframe src="javascript:window.__pwned_iframe=1"></iframe>

```html
<script>alert("kept as code")</script>
```

The end.
"""

#: The answer after tool results: one line per result, then the end.
TOOL_ANSWER_LINE = "The tool {name} returned: {result}"
TOOL_ANSWER_END = "That is what the tools said."

REASONING_TEXT = "Let me think about this step by step. The user wants an answer, so I will write one."

_FILLER = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)
_TOKEN_RE = re.compile(r"\S+\s*|\s+")
_TOOL_REPLIES = ("tool_call", "tool_calls")
_ARGUMENT_PIECE = 8  # characters of tool-call arguments per streamed event
_REASONING_REPEATS = {"high": 2, "xhigh": 3, "max": 4}


def tokenize(text: str) -> list[str]:
    """Split text into the emulator's tokens (word plus trailing whitespace)."""
    return _TOKEN_RE.findall(text)


def filler_text(n: int) -> str:
    """The deterministic filler answer of exactly ``n`` tokens."""
    return "".join(_filler_tokens(n))


def _filler_tokens(n: int) -> list[str]:
    words = [w + " " for w in _FILLER]
    k = len(words)
    tokens = words * (n // k) + words[: n % k]
    if tokens:
        tokens[-1] = tokens[-1].rstrip() + "."
    return tokens


def _last_user(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def _example_for(schema: Any, depth: int = 0) -> Any:
    """A small value that fits a JSON schema (enough for demos, not a validator)."""
    if not isinstance(schema, dict) or depth > 6:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _example_for(schema[key][0], depth + 1)
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {k: _example_for(v, depth + 1) for k, v in props.items() if isinstance(k, str)}
    if typ == "array":
        return [_example_for(schema.get("items"), depth + 1)] if isinstance(schema.get("items"), dict) else []
    return {"string": "example", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(typ), "example")


def canned_reply(messages: list[dict[str, Any]], reply: str = "markdown", *, answer_tokens: int | None = None,
                 response_format: dict[str, Any] | None = None) -> str:
    """The full answer text the emulator gives for these messages (before max_tokens/stop)."""
    if answer_tokens is not None:
        return filler_text(answer_tokens)
    prompt = _last_user(messages)
    turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "user")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema"):
        if response_format["type"] == "json_schema":
            js = response_format.get("json_schema") or {}
            value = _example_for(js.get("schema") if isinstance(js, dict) else None)
            if isinstance(value, dict):
                return json.dumps(value)
        return json.dumps({"answer": f"You asked: {prompt}", "turn": turn})
    if reply == "markdown":
        return MARKDOWN_REPLY_TEMPLATE.format(prompt=prompt, turn=turn)
    if reply == "echo":
        return prompt
    if reply == "hostile":
        return HOSTILE_REPLY
    if reply == "code":
        return CODE_REPLY
    return reply


def reasoning_text(effort: str | None = None) -> str:
    """The reasoning the emulator sends for an effort: low is short, high..max repeat it."""
    if effort == "low":
        return REASONING_TEXT.split(". ")[0] + ". "
    return " ".join([REASONING_TEXT] * _REASONING_REPEATS.get(effort or "", 1))


def _reasoning_tokens(effort: str | None, n: int | None) -> list[str]:
    """Reasoning tokens for ``effort``, or exactly ``n`` when given."""
    if n is None:
        return tokenize(reasoning_text(effort))
    base = tokenize(REASONING_TEXT + " ")
    return [base[i % len(base)] for i in range(n)]


def _apply_stop(text: str, stop: Any) -> str:
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if isinstance(s, str)]
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return text[:cut] if cut >= 0 else text


def pieces(text: str) -> list[str]:
    """Tool-call arguments split into streamed fragments."""
    return [text[i:i + _ARGUMENT_PIECE] for i in range(0, len(text), _ARGUMENT_PIECE)]


def _tool_calls(req: ChatRequest, reply: str, answer_id: str) -> list[dict[str, Any]]:
    """The tool calls to answer with ([] for a text answer); arguments fit each tool's parameters."""
    tools, choice = req.tools, req.tool_choice
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        chosen = [next(t for t in tools if t["function"]["name"] == choice["function"]["name"])]
    elif reply == "tool_calls":
        chosen = tools
    elif reply == "tool_call" or choice == "required":
        chosen = tools[:1]
    elif _after_tool_results(req.messages):
        return []
    else:
        named = set(re.findall(r"[A-Za-z0-9_-]+", _last_user(req.messages)))
        chosen = [t for t in tools if t["function"]["name"] in named]
        if not chosen:
            return []
    suffix = answer_id.rsplit("-", 1)[-1]
    calls = []
    for i, tool in enumerate(chosen):
        fn = tool["function"]
        args = _example_for(fn.get("parameters")) if isinstance(fn.get("parameters"), dict) else {}
        calls.append({"index": i, "id": f"call_emu{suffix}_{i}", "type": "function",
                      "function": {"name": fn["name"], "arguments": json.dumps(args if isinstance(args, dict) else {})}})
    return calls


def _after_tool_results(messages: list[dict[str, Any]]) -> bool:
    """Whether the conversation ends with ``tool`` messages (results to answer from)."""
    return bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"


def tool_answer(messages: list[dict[str, Any]]) -> str:
    """The text answer to the ``tool`` results that end ``messages`` (named by their calls)."""
    names: dict[str, str] = {}
    for m in messages:
        for call in (m.get("tool_calls") or []) if isinstance(m, dict) and m.get("role") == "assistant" else []:
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                names[str(call.get("id"))] = str(call["function"].get("name"))
    results = []
    for m in reversed(messages):
        if not (isinstance(m, dict) and m.get("role") == "tool"):
            break
        results.append(TOOL_ANSWER_LINE.format(name=names.get(str(m.get("tool_call_id")), "?"),
                                               result=text_of(m.get("content"))))
    return "\n\n".join([*reversed(results), TOOL_ANSWER_END])


@dataclass(frozen=True)
class Answer:
    """One request's answer as tokens (reasoning, then content or tool calls), and its usage."""

    reasoning: list[str]
    tokens: list[str]
    tool_calls: list[dict[str, Any]]
    finish: str
    usage: dict[str, Any]


def compose_answer(req: ChatRequest, cfg: dict[str, Any], answer_id: str, *, cached_tokens: int,
                   empty: bool = False) -> Answer:
    """The answer the settings ``cfg`` give ``req`` (``empty``: no text at all)."""
    reasoning: list[str] = []
    if not empty and (cfg["reasoning"] if cfg["reasoning"] is not None else reasons(req.model, req.effort)):
        effort = req.effort or req.model.default_effort or "medium"
        reasoning = _reasoning_tokens(effort, cfg["reasoning_tokens"])
    rf = req.response_format
    calls = [] if empty or rf else _tool_calls(req, cfg["reply"], answer_id)
    if empty or calls:
        tokens: list[str] = []
    elif cfg["answer_tokens"] is not None and rf is None:
        tokens = _filler_tokens(cfg["answer_tokens"])
    else:
        reply = "markdown" if cfg["reply"] in _TOOL_REPLIES else cfg["reply"]
        text = (tool_answer(req.messages) if req.tools and rf is None and _after_tool_results(req.messages)
                else canned_reply(req.messages, reply, response_format=rf))
        tokens = tokenize(_apply_stop(text, req.stop))
    finish = "tool_calls" if calls else "stop"
    if req.max_tokens is not None and len(reasoning) + len(tokens) > req.max_tokens:
        reasoning = reasoning[:req.max_tokens]
        tokens = tokens[: req.max_tokens - len(reasoning)]
        finish = "length"
    n_reasoning = len(reasoning)
    if reasoning and cfg["reasoning_field"] == "think":
        tokens, reasoning = ["<think>\n", *reasoning, "\n</think>\n\n", *tokens], []
    completion = len(tokens) + len(reasoning) + sum(1 + len(pieces(c["function"]["arguments"])) for c in calls)
    prompt = word_count(req.messages)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
             "prompt_tokens_details": {"cached_tokens": cached_tokens},
             "completion_tokens_details": {"reasoning_tokens": n_reasoning}}
    return Answer(reasoning, tokens, calls, finish, usage)
