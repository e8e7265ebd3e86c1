"""Structured output: a schema becomes a ``response_format``, and a reply becomes a value.

Pure module (no aiohttp, IPython or pydantic at import). A schema is either a JSON-schema
``dict`` or a Pydantic model class (pydantic is imported only when a class is passed)::

    s = Schema.of({"type": "object", "properties": {"label": {"enum": ["pos", "neg"]}},
                   "required": ["label"]})
    body["response_format"] = s.response_format     # {"type": "json_schema", ...}
    value = s.parse(reply_text)                      # dict, or raises SchemaValidationError

Dict schemas are checked by a small built-in validator covering what extraction schemas
use: ``type`` (incl. lists of types), ``enum``, ``const``, ``properties``, ``required``,
``additionalProperties``, ``items``, ``minItems``/``maxItems``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``anyOf``/``oneOf``/``allOf`` and local ``$ref``
(``#/$defs/...``, ``#/definitions/...``). Other keywords are ignored. Pydantic models are
checked by ``Model.model_validate``.
"""
from __future__ import annotations

import json
import re
from typing import Any

from .errors import UpstageError
from .formats import strip_json_fence
from .secrets import cut

__all__ = [
    "Schema",
    "SchemaValidationError",
    "parse_json",
    "response_format",
    "validate",
]

_SHOWN_CHARS = 200
_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")


class SchemaValidationError(UpstageError, ValueError):
    """The model's reply is not JSON, or does not match the schema.

    ``text`` is the reply (cut to 200 characters in the message), ``errors`` the list of
    problems found (``"$.path: what is wrong"``), first one in the message.
    """

    default_hint = (
        "Describe the fields in the prompt (and say 'JSON'), loosen the schema, or raise "
        "max_tokens if the reply was cut off."
    )

    def __init__(self, message: str, *, text: str = "", errors: list[str] | None = None,
                 hint: str | None = None) -> None:
        self.text = text
        self.errors = list(errors or [])
        super().__init__(message, hint=hint)


def _cut(text: str, limit: int = _SHOWN_CHARS) -> str:
    return cut(text, limit, more=f"... ({len(text)} characters)")


def parse_json(text: str) -> Any:
    """Parse a reply as JSON, after stripping a surrounding ```json fence if present."""
    if not isinstance(text, str):
        raise SchemaValidationError(f"Expected the reply as text, got {type(text).__name__}.", text=repr(text))
    try:
        return json.loads(strip_json_fence(text))
    except ValueError as exc:
        raise SchemaValidationError(
            f"The reply is not valid JSON ({exc}). Reply: {_cut(text)!r}.", text=text, errors=[str(exc)]
        ) from None


# --------------------------------------------------------------------------- validator

_TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _type_name(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _TYPES[name](value):
            return name
    return type(value).__name__


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    if not ref.startswith("#/"):
        raise SchemaValidationError(f"Only local $ref ('#/...') is supported, got {ref!r}.",
                                    hint="Inline the referenced schema.")
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise SchemaValidationError(f"The schema's $ref {ref!r} points nowhere.", hint="Fix the schema.")
        node = node[part]
    return node


def validate(value: Any, schema: dict[str, Any], *, limit: int = 10) -> list[str]:
    """Problems with ``value`` under the JSON ``schema`` (empty list: it matches)."""
    errors: list[str] = []
    _check(value, schema, "$", schema, errors, limit, 0)
    return errors


def _check(value: Any, schema: Any, path: str, root: dict[str, Any], errors: list[str],
           limit: int, depth: int) -> None:
    """Append the problems of ``value`` at ``path`` to ``errors`` (at most ``limit``)."""
    if len(errors) >= limit or schema is True or schema is None or depth > 64:
        return
    if schema is False:
        errors.append(f"{path}: no value is allowed here")
        return
    if not isinstance(schema, dict):
        return
    if "$ref" in schema and isinstance(schema["$ref"], str):
        _check(value, _resolve(schema["$ref"], root), path, root, errors, limit, depth + 1)
    typ = schema.get("type")
    if typ is not None:
        types = typ if isinstance(typ, list) else [typ]
        if not any(t in _TYPES and _TYPES[t](value) for t in types):
            want = " or ".join(str(t) for t in types)
            errors.append(f"{path}: expected {want}, got {_type_name(value)} {_cut(json.dumps(value), 60)}")
            return
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: must be {json.dumps(schema['const'])}, got {_cut(json.dumps(value), 60)}")
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(value == e and _type_name(value) == _type_name(e) for e in enum):
        errors.append(f"{path}: must be one of {_cut(json.dumps(enum), 120)}, got {_cut(json.dumps(value), 60)}")
    for key in ("allOf", "anyOf", "oneOf"):
        subs = schema.get(key)
        if not isinstance(subs, list) or not subs:
            continue
        results = []
        for sub in subs:
            sub_errors: list[str] = []
            _check(value, sub, path, root, sub_errors, limit, depth + 1)
            results.append(sub_errors)
        if key == "allOf":
            for sub_errors in results:
                errors.extend(sub_errors[: max(0, limit - len(errors))])
        elif key == "anyOf" and all(results):
            errors.append(f"{path}: matches none of anyOf ({results[0][0]})")
        elif key == "oneOf" and sum(1 for r in results if not r) != 1:
            n = sum(1 for r in results if not r)
            errors.append(f"{path}: must match exactly one of oneOf, matches {n}"
                          + (f" ({results[0][0]})" if n == 0 else ""))
    if isinstance(value, dict):
        raw_props = schema.get("properties")
        props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
        for name in schema.get("required") or []:
            if name not in value:
                errors.append(f"{path}: missing required property {name!r}")
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            sub_path = f"{path}.{name}" if re.fullmatch(r"[A-Za-z_]\w*", str(name)) else f"{path}[{name!r}]"
            if name in props:
                _check(item, props[name], sub_path, root, errors, limit, depth + 1)
            elif extra is False:
                errors.append(f"{path}: unexpected property {name!r}")
            elif isinstance(extra, dict):
                _check(item, extra, sub_path, root, errors, limit, depth + 1)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, (dict, bool)):
            for i, item in enumerate(value):
                _check(item, items, f"{path}[{i}]", root, errors, limit, depth + 1)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if isinstance(lo, int) and len(value) < lo:
            errors.append(f"{path}: needs at least {lo} items, has {len(value)}")
        if isinstance(hi, int) and len(value) > hi:
            errors.append(f"{path}: allows at most {hi} items, has {len(value)}")
    elif isinstance(value, str):
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and len(value) < lo:
            errors.append(f"{path}: needs at least {lo} characters, has {len(value)}")
        if isinstance(hi, int) and len(value) > hi:
            errors.append(f"{path}: allows at most {hi} characters, has {len(value)}")
    elif _TYPES["number"](value):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, (int, float)) and value < lo:
            errors.append(f"{path}: must be >= {lo}, got {value}")
        if isinstance(hi, (int, float)) and value > hi:
            errors.append(f"{path}: must be <= {hi}, got {value}")
    del errors[limit:]


# --------------------------------------------------------------------------- schema


def _is_model_class(obj: Any) -> bool:
    """A Pydantic v2 model class (duck-typed: no pydantic import needed to tell)."""
    return isinstance(obj, type) and callable(getattr(obj, "model_json_schema", None)) \
        and callable(getattr(obj, "model_validate", None))


class Schema:
    """A JSON schema (dict) or a Pydantic model class, ready for requests and replies.

    ``Schema.of(x)`` accepts a dict, a model class or a ``Schema``. ``response_format``
    is the request's value; ``parse(text)`` turns a reply into a dict (dict schema) or a
    model instance (Pydantic); ``fields`` names the top-level properties (for columns).
    """

    __slots__ = ("json_schema", "model", "name", "strict")

    def __init__(self, schema: Any, *, name: str | None = None, strict: bool | None = None) -> None:
        self.model: Any = None
        if _is_model_class(schema):
            self.model = schema
            js = schema.model_json_schema()
            default_name = schema.__name__
        elif isinstance(schema, dict):
            js = schema
            default_name = str(schema.get("title") or "result")
        else:
            raise TypeError(
                f"schema must be a JSON-schema dict or a Pydantic model class, not {type(schema).__name__}. "
                'Example: {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}'
            )
        if not isinstance(js.get("type", "object"), (str, list)):
            raise TypeError("schema['type'] must be a string such as 'object' (or a list of them)")
        self.json_schema: dict[str, Any] = js
        self.name = _NAME_BAD.sub("_", name or default_name)[:64] or "result"
        self.strict = strict

    @classmethod
    def of(cls, schema: Any) -> Schema:
        """``schema`` as a Schema (returned as is when it already is one)."""
        return schema if isinstance(schema, Schema) else cls(schema)

    @property
    def response_format(self) -> dict[str, Any]:
        """``{"type": "json_schema", "json_schema": {"name", "schema"[, "strict"]}}``."""
        spec: dict[str, Any] = {"name": self.name, "schema": self.json_schema}
        if self.strict is not None:
            spec["strict"] = bool(self.strict)
        return {"type": "json_schema", "json_schema": spec}

    @property
    def fields(self) -> list[str]:
        """Top-level property names, in schema order (empty for non-object schemas)."""
        props = self.json_schema.get("properties")
        return [str(k) for k in props] if isinstance(props, dict) else []

    def parse(self, text: str) -> Any:
        """The reply as a validated value; raises SchemaValidationError when it does not fit."""
        value = parse_json(text)
        if self.model is not None:
            return self._validate_model(value, text)
        errors = validate(value, self.json_schema)
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise SchemaValidationError(
                f"The reply does not match the schema {self.name!r}: {errors[0]}{more}. Reply: {_cut(text)!r}.",
                text=text, errors=errors,
            )
        return value

    def _validate_model(self, value: Any, text: str) -> Any:
        from pydantic import ValidationError  # type: ignore[import-not-found,unused-ignore]

        try:
            return self.model.model_validate(value)
        except ValidationError as exc:
            errors = [
                f"$.{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}".replace("$.:", "$:")
                for e in exc.errors()
            ]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise SchemaValidationError(
                f"The reply does not match {self.model.__name__}: {errors[0] if errors else exc}{more}. "
                f"Reply: {_cut(text)!r}.",
                text=text, errors=errors,
            ) from None

    def __repr__(self) -> str:
        return f"Schema({self.name!r}, fields={self.fields!r})"


def response_format(schema: Any, *, name: str | None = None, strict: bool | None = None) -> dict[str, Any]:
    """The ``response_format`` request value for a dict schema or a Pydantic model class."""
    return Schema(schema, name=name, strict=strict).response_format if not isinstance(schema, Schema) \
        else schema.response_format
