"""Output formats of an answer: markdown, text, code and json, each decided here. Pure.

For each format: the instruction added to the system message, the request options, and
the final value of a complete answer (what ``-o`` gets and what is shown). How it looks on
a page is the front end's business (``notebook.display`` renders these values). Also the
one home of Markdown fences: :func:`fence`, :func:`fence_ticks`, :func:`extract_code`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CODE_INSTRUCTION",
    "FORMATS",
    "JSON_INSTRUCTION",
    "Final",
    "extract_code",
    "fence",
    "fence_ticks",
    "final_for",
    "instruction_for",
    "request_options_for",
    "strip_json_fence",
]

FORMATS = ("markdown", "text", "code", "json")

#: JSON mode needs the word "JSON" in the conversation (the API answers 400 otherwise).
JSON_INSTRUCTION = "Respond with a single valid JSON object."
CODE_INSTRUCTION = "Reply with only the code, in one fenced code block with its language."


@dataclass(frozen=True)
class Final:
    """A complete answer in its format: ``value`` for ``-o``; ``shown`` (Markdown, text or
    code) to display as ``kind`` ("markdown", "text" or "code" in ``lang``); a ``problem``."""

    value: Any
    shown: str
    kind: str = "markdown"
    lang: str = ""
    problem: str | None = None


def instruction_for(fmt: str, said: str = "") -> str | None:
    """The system-message line a format adds (json: only if the conversation never says "JSON")."""
    if fmt == "code":
        return CODE_INSTRUCTION
    if fmt == "json" and "json" not in said.lower():
        return JSON_INSTRUCTION
    return None


def request_options_for(fmt: str, schema: Any = None) -> dict[str, Any]:
    """Request options a format needs (json: the API's JSON mode, or the schema's)."""
    if fmt == "json":
        return {"response_format": schema.response_format if schema is not None else {"type": "json_object"}}
    return {}


def final_for(fmt: str, text: str, *, schema: Any = None) -> Final:
    """The final value and display of a complete answer ``text`` (already masked)."""
    if fmt == "code":
        code, lang = extract_code(text)
        return Final(code, code, "code", lang)
    if fmt == "text":
        return Final(text, text, "text")
    if fmt != "json":
        return Final(text, text)
    from .schema import Schema, SchemaValidationError, parse_json  # noqa: PLC0415

    try:
        obj = parse_json(text)
        value = Schema.of(schema).parse(text) if schema is not None else obj
    except SchemaValidationError as exc:
        return Final(None, text, "code", "json", exc.message)
    return Final(value, json.dumps(obj, indent=2, ensure_ascii=False), "code", "json")


# ---------------------------------------------------------------------------- fences
_FENCE_RE = re.compile(r"^( {0,3})(`{3,}|~{3,})([^\n`]*)\n(.*?)^ {0,3}\2[`~]*[ \t]*$", re.M | re.S)
_FENCE_OPEN_RE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n`]*)\n", re.M)
_LANG_RE = re.compile(r"[^\w+#.\-]")


def fence_ticks(text: str) -> str:
    """A backtick fence longer than any backtick run in ``text`` (at least three)."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def fence(code: str, lang: str = "") -> str:
    """A fenced Markdown code block that holds ``code`` byte-exact (``lang`` cleaned)."""
    ticks = fence_ticks(code)
    nl = "" if code.endswith("\n") or not code else "\n"
    return f"{ticks}{_LANG_RE.sub('', lang)[:30]}\n{code}{nl}{ticks}"


def extract_code(text: str) -> tuple[str, str]:
    """The first fenced code block of ``text`` as (code, language); else (text, "")."""
    m = _FENCE_RE.search(text)
    if m:
        return m.group(4), m.group(3).strip().split(" ")[0] if m.group(3).strip() else ""
    m2 = _FENCE_OPEN_RE.search(text)  # an unclosed fence (answer cut): everything after it
    if m2:
        return text[m2.end():], m2.group(2).strip().split(" ")[0]
    return text.strip("\n") + ("\n" if text.strip() else ""), ""


def strip_json_fence(text: str) -> str:
    """JSON text without a surrounding ```json fence, if the model added one."""
    s = text.strip()
    if s.startswith(("```", "~~~")):
        return extract_code(s)[0]
    return s
