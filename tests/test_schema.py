"""schema.py: response_format from dict/Pydantic schemas, reply parsing and validation."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from upstage_magic.schema import (
    Schema,
    SchemaValidationError,
    parse_json,
    response_format,
    validate,
)

LABEL = {
    "title": "Review label",
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["label", "score"],
    "additionalProperties": False,
}


def test_response_format_from_dict_schema():
    rf = response_format(LABEL)
    assert rf["type"] == "json_schema"
    spec = rf["json_schema"]
    assert spec["name"] == "Review_label"  # sanitised title
    assert spec["schema"] is LABEL
    assert "strict" not in spec
    assert Schema(LABEL, strict=True).response_format["json_schema"]["strict"] is True
    assert Schema({"type": "object"}).name == "result"
    assert Schema(LABEL).fields == ["label", "score", "tags"]


def test_parse_valid_reply_and_fenced_reply():
    s = Schema(LABEL)
    assert s.parse('{"label": "positive", "score": 0.9}') == {"label": "positive", "score": 0.9}
    fenced = '```json\n{"label": "neutral", "score": 0, "tags": ["a"]}\n```'
    assert s.parse(fenced)["tags"] == ["a"]
    assert parse_json("```\n[1, 2]\n```") == [1, 2]


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ({"label": "positive"}, "missing required property 'score'"),
        ({"label": "great", "score": 0.5}, "$.label: must be one of"),
        ({"label": "positive", "score": "high"}, "$.score: expected number, got string"),
        ({"label": "positive", "score": 2}, "$.score: must be <= 1"),
        ({"label": "positive", "score": 0.1, "extra": 1}, "unexpected property 'extra'"),
        ({"label": "positive", "score": 0.1, "tags": ["a", 3]}, "$.tags[1]: expected string, got integer"),
        ({"label": "positive", "score": 0.1, "tags": ["a", "b", "c", "d"]}, "at most 3 items"),
        (["not", "an", "object"], "$: expected object, got array"),
    ],
)
def test_validation_errors_name_the_path(value, needle):
    errors = validate(value, LABEL)
    assert errors, value
    assert any(needle in e for e in errors), errors
    with pytest.raises(SchemaValidationError) as info:
        Schema(LABEL).parse(json.dumps(value))
    assert needle in str(info.value) or needle in info.value.errors[0] or any(needle in e for e in info.value.errors)
    assert "Reply:" in str(info.value)


def test_types_bool_is_not_integer_and_float_integers_are():
    assert validate(True, {"type": "integer"})
    assert not validate(3.0, {"type": "integer"})
    assert validate(1, {"enum": [True]})  # 1 is not true
    assert not validate(None, {"type": ["string", "null"]})


def test_any_of_one_of_and_local_refs():
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "id": {"anyOf": [{"type": "integer"}, {"type": "string", "minLength": 2}]},
            "one": {"oneOf": [{"type": "integer"}, {"type": "number"}]},
        },
    }
    assert not validate({"items": [{"n": 1}], "id": "ab", "one": 1.5}, schema)
    assert any("$.items[0]" in e and "'n'" in e for e in validate({"items": [{}]}, schema))
    assert any("anyOf" in e for e in validate({"id": "a"}, schema))
    assert any("exactly one" in e for e in validate({"one": 2}, schema))  # 2 is integer and number


def test_not_json_is_a_clear_error_with_the_text_cut():
    text = "Sure! Here is the label: positive. " + "x" * 500
    with pytest.raises(SchemaValidationError) as info:
        Schema(LABEL).parse(text)
    msg = str(info.value)
    assert "not valid JSON" in msg and "Sure! Here is the label" in msg
    assert "x" * 300 not in msg and "characters)" in msg
    assert isinstance(info.value, ValueError)


def test_bad_schema_argument_says_what_to_pass():
    with pytest.raises(TypeError, match="JSON-schema dict or a Pydantic model class"):
        Schema("label")
    with pytest.raises(TypeError, match="must be a string"):
        Schema({"type": {"bad": 1}})


def test_pydantic_model_class():
    pydantic = pytest.importorskip("pydantic")

    class Review(pydantic.BaseModel):
        label: str
        score: float

    s = Schema(Review)
    rf = s.response_format["json_schema"]
    assert rf["name"] == "Review"
    assert set(rf["schema"]["properties"]) == {"label", "score"}
    assert s.fields == ["label", "score"]
    value = s.parse('{"label": "positive", "score": 0.25}')
    assert isinstance(value, Review) and value.score == 0.25
    with pytest.raises(SchemaValidationError, match=r"Review: \$\.score"):
        s.parse('{"label": "positive", "score": "very"}')


def test_dict_schemas_do_not_import_pydantic():
    code = (
        "import sys\n"
        "from upstage_magic.schema import Schema\n"
        "Schema({'type': 'object'}).parse('{}')\n"
        "print('pydantic' in sys.modules, 'aiohttp' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
