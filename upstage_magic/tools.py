"""Tools the model may call: a function's JSON schema, its argument check, its result as text. Pure.

A tool is a Python function offered to the model. Its JSON schema comes from its signature,
type hints (``Literal``, ``Optional``, lists, dicts, dataclasses, Pydantic models...) and
docstring (the summary, and parameter descriptions in Google, NumPy, reST or Epydoc style);
the model's arguments are checked against the same Pydantic model before the function runs::

    @tool                        # or @tool(approve=False): safe to run without asking
    def area(radius: float, unit: Literal["cm", "m"] = "cm") -> float:
        \"\"\"The area of a circle.

        Args:
            radius: the radius.
            unit: the unit of the radius.
        \"\"\"
        ...

    t = as_tool(area); t.spec()  # {"type": "function", "function": {"name", "description", "parameters"}}
    t.arguments('{"radius": 2}') # {"radius": 2.0, "unit": "cm"}; ToolArgumentError if they do not fit

Pydantic (schema and validation) and docstring-parser (parameter descriptions) are imported
only when a tool is built. Nothing here runs a tool: the notebook layer does, after approval
(``approve`` says only whether a call may run *without asking*; nothing the model sends can
change it). :func:`result_text` turns any result into the bounded, masked text sent back.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .secrets import cut, mask_secrets

__all__ = ["RESULT_CHARS", "Tool", "ToolArgumentError", "ToolError", "as_tool", "as_tools", "build", "error_text",
           "result_text", "tool", "tool_specs"]

#: Characters of a result sent back to the model (what is cut is said).
RESULT_CHARS = 4000
#: What the API takes as a function name (OpenAI's rule: letters, digits, ``_`` and ``-``, 1-64).
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ATTRIBUTE = "__upstage_tool__"


class ToolError(ValueError):
    """A function cannot be offered as a tool (the message says why and what to do)."""


class ToolArgumentError(ValueError):
    """The model's arguments for a tool are not valid JSON or do not fit its parameters."""


@dataclass(frozen=True, eq=False)
class Tool:
    """A function offered to the model, with its schema and argument model.

    ``approve``: ask before every call (the default); ``False`` runs it without asking.
    """

    name: str
    function: Callable[..., Any]
    description: str
    parameters: dict[str, Any]
    approve: bool = True
    model: Any = field(default=None, repr=False)
    positional: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def spec(self) -> dict[str, Any]:
        """The entry of the request's ``tools`` list (no ``strict``: the API refuses it)."""
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}

    def arguments(self, text: str | Mapping[str, Any]) -> dict[str, Any]:
        """The model's arguments (JSON text or a dict) checked and converted; ToolArgumentError if not."""
        if isinstance(text, str):
            try:
                data = json.loads(text) if text.strip() else {}
            except ValueError as exc:
                raise ToolArgumentError(f"the arguments are not valid JSON ({exc})") from None
        else:
            data = dict(text)
        if not isinstance(data, dict):
            raise ToolArgumentError("the arguments must be a JSON object")
        from pydantic import ValidationError  # noqa: PLC0415

        try:
            checked = self.model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                                 for e in exc.errors())
            raise ToolArgumentError(f"the arguments do not fit {self.name}'s parameters: {problems}") from None
        return {name: getattr(checked, name) for name in type(checked).model_fields}

    def call(self, arguments: Mapping[str, Any]) -> Any:
        """Call the function with checked ``arguments`` (a coroutine for an ``async def`` tool)."""
        args = [arguments[n] for n in self.positional if n in arguments]
        kwargs = {k: v for k, v in arguments.items() if k not in self.positional}
        return self.function(*args, **kwargs)


def tool(function: Callable[..., Any] | None = None, *, approve: bool = True, name: str | None = None,
         description: str | None = None) -> Any:
    """Mark a function as a tool (``@tool`` or ``@tool(approve=False, name=..., description=...)``).

    The function is returned unchanged (it still works as before); its :class:`Tool` is
    built at once, so a parameter that cannot be described fails here, not mid-answer.
    """
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        built = build(fn, approve=approve, name=name, description=description)
        try:
            setattr(fn, _ATTRIBUTE, built)
        except (AttributeError, TypeError):
            raise ToolError(f"{built.name}: cannot mark this object as a tool; pass Tool objects instead.") from None
        return fn

    return mark(function) if function is not None else mark


def as_tool(obj: Any, *, approve: bool | None = None) -> Tool:
    """A :class:`Tool` for ``obj`` (a Tool, a function marked with :func:`tool`, or any function).

    ``approve`` (when given) overrides the tool's own setting (``--approve f`` gives False).
    """
    if isinstance(obj, Tool):
        built = obj
    elif isinstance(getattr(obj, _ATTRIBUTE, None), Tool):
        built = getattr(obj, _ATTRIBUTE)
    elif callable(obj):
        built = build(obj)
    else:
        raise ToolError(f"{type(obj).__name__} object is not a function; a tool is a function.")
    if approve is not None and approve != built.approve:
        built = dataclasses.replace(built, approve=approve)
    return built


def as_tools(objs: Iterable[Any]) -> tuple[Tool, ...]:
    """Tools for ``objs`` (ToolError on two with one name)."""
    tools = tuple(as_tool(o) for o in objs)
    names = [t.name for t in tools]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ToolError(f"two tools are named {', '.join(twice)}; give each its own name (@tool(name=...)).")
    return tools


def tool_specs(tools: Iterable[Any]) -> list[dict[str, Any]]:
    """The request's ``tools`` list."""
    return [as_tool(t).spec() for t in tools]


def build(fn: Callable[..., Any], *, approve: bool = True, name: str | None = None,
          description: str | None = None) -> Tool:
    """The :class:`Tool` of ``fn``: schema from its signature, hints and docstring (ToolError if it cannot)."""
    from pydantic import ConfigDict, Field, create_model  # noqa: PLC0415

    name = name or getattr(fn, "__name__", "") or ""
    if not _NAME_RE.match(name):
        raise ToolError(f"{name!r} cannot be a tool's name: use letters, digits, _ and - (at most 64); "
                        "give a lambda or a callable object a name with @tool(name=...).")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{name}: its signature cannot be read ({exc}).") from None
    hints = _hints(fn)
    doc_summary, param_docs = _docstring(fn)
    fields: dict[str, Any] = {}
    positional = []
    for pname, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue  # *args/**kwargs cannot be described; the model is offered the named ones
        if pname.startswith("_"):
            raise ToolError(f"{name}: parameter {pname!r} starts with '_'; the model cannot be asked to fill it.")
        if p.kind is p.POSITIONAL_ONLY:
            positional.append(pname)
        default = ... if p.default is p.empty else p.default
        fields[pname] = (hints.get(pname, Any), Field(default, description=param_docs.get(pname)))
    try:
        model = create_model(f"{name}_arguments", __config__=ConfigDict(extra="forbid",
                             arbitrary_types_allowed=True), **fields)
        parameters = _tidy(model.model_json_schema())
    except Exception as exc:  # noqa: BLE001 - pydantic says which hint it cannot describe
        raise ToolError(f"{name}: its parameters cannot be described as JSON schema "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}).") from None
    return Tool(name=name, function=fn, description=(description or doc_summary or name).strip(),
                parameters=parameters, approve=approve, model=model, positional=tuple(positional))


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing  # noqa: PLC0415

    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # noqa: BLE001 - an unresolvable forward reference: no hint (Any)
        return {}


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary (first paragraphs) and per-parameter descriptions of ``fn``'s docstring."""
    text = inspect.getdoc(fn) or ""
    if not text:
        return "", {}
    import docstring_parser  # noqa: PLC0415

    try:
        doc = docstring_parser.parse(text)
    except docstring_parser.ParseError:
        return text.split("\n\n")[0], {}
    summary = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    return summary, {p.arg_name: p.description for p in doc.params if p.description}


def _tidy(schema: dict[str, Any]) -> dict[str, Any]:
    """The arguments model's schema without Pydantic's generated titles (noise for the model)."""
    schema.pop("title", None)
    for prop in (schema.get("properties") or {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return schema


# ----------------------------------------------------------------------------- results


def result_text(value: Any, limit: int = RESULT_CHARS) -> str:
    """A result as the text sent back to the model: JSON when it is JSON, else its repr; masked, cut."""
    if isinstance(value, str):
        text = value
    elif hasattr(value, "model_dump_json") and not isinstance(value, type):
        text = value.model_dump_json()
    else:
        try:
            plain = dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
            text = json.dumps(plain, ensure_ascii=False)
        except (TypeError, ValueError):
            text = _repr(value)
    masked = mask_secrets(text)
    if len(masked) <= limit:
        return masked
    return cut(masked, limit, more=f"... [cut: {len(masked):,} characters in all]", redacting=False)


def _repr(value: Any) -> str:
    to_string = getattr(value, "to_string", None)  # a DataFrame/Series: bounded rows and columns
    if callable(to_string) and type(value).__module__.startswith("pandas"):
        try:
            return str(to_string(max_rows=30, max_cols=20))
        except Exception:  # noqa: BLE001,S110 - fall back to repr
            pass
    try:
        return repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not end the loop
        return f"<{type(value).__name__} object (repr failed: {type(exc).__name__})>"


def error_text(exc: BaseException, limit: int = 1000) -> str:
    """An exception as the error result sent back to the model (one line, masked, cut)."""
    return cut(f"Error: {type(exc).__name__}: {exc}", limit)
