"""The exception tree: classes per status, messages with hints, no secrets."""
from __future__ import annotations

import json
import pickle
import traceback

import pytest

from upstage_magic import errors
from upstage_magic.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MalformedEventError,
    MissingAPIKeyError,
    ModelNotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
    UpstageError,
    redact,
    register_secret,
    status_error,
)


@pytest.mark.parametrize(
    "status, cls",
    [(400, BadRequestError), (401, AuthenticationError), (403, AuthenticationError),
     (404, ModelNotFoundError), (422, BadRequestError), (429, RateLimitError),
     (500, ServerError), (502, ServerError), (503, ServerError)],
)
def test_status_maps_to_class_with_server_message_and_hint(status, cls):
    err = status_error(status, server_message="the server said so")
    assert type(err) is cls
    assert isinstance(err, APIStatusError) and isinstance(err, UpstageError)
    assert err.status == status
    text = str(err)
    assert f"HTTP {status}" in text and "the server said so" in text
    assert err.hint and err.hint in text


def test_rate_limit_carries_retry_after():
    err = status_error(429, retry_after=2.5)
    assert isinstance(err, RateLimitError) and err.retry_after == 2.5


def test_missing_key_says_how_to_set_it():
    assert "UPSTAGE_API_KEY" in str(MissingAPIKeyError())


def test_malformed_event_is_also_json_decode_error():
    err = MalformedEventError("Malformed event from the server", doc='{"a":', pos=5)
    assert isinstance(err, json.JSONDecodeError)
    assert isinstance(err, StreamError)
    with pytest.raises(json.JSONDecodeError):
        raise err
    assert pickle.loads(pickle.dumps(err)).message == err.message


def test_registered_secret_never_appears_in_message_repr_or_traceback():
    secret = "sk-test-VERYSECRET-0042"
    register_secret(secret)
    try:
        raise AuthenticationError(f"bad key {secret}", status=401, server_message=f"key {secret} invalid")
    except AuthenticationError as exc:
        rendered = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + repr(exc.args)
    assert secret not in rendered
    assert "***" in rendered


def test_key_like_tokens_are_masked_without_registration():
    text = redact("Authorization: Bearer abcdefgh1234 and up_ABCDEFGHIJKLMNOPQRSTUV")
    assert "abcdefgh1234" not in text and "ABCDEFGHIJKLMNOP" not in text


def test_errors_module_is_pure():
    assert "aiohttp" not in errors.__dict__


def test_status_error_body_is_redacted_recursively():
    secret = "sk-test-BODYSECRET-0099"
    register_secret(secret)
    body = {"error": {"message": f"bad key {secret}", "details": [f"x {secret}", {"k": secret}], "n": 3}}
    err = status_error(401, server_message="bad key", body=body)
    assert secret not in repr(err.body)
    assert err.body["error"]["n"] == 3 and err.body["error"]["details"][1] == {"k": "***"}
    assert body["error"]["message"].endswith(secret)  # the caller's object is not mutated


def test_rate_limit_message_says_how_long_to_wait():
    err = status_error(429, server_message="Slow down", retry_after=120.0)
    assert "The server asks to retry after 120 s." in str(err)
    assert "retry after 0.5 s" in str(status_error(429, retry_after=0.5))
    assert "retry after" not in str(status_error(429))
    assert "retry after" not in str(status_error(503, retry_after=5))


def test_connection_hint_names_both_proxy_variables():
    hint = errors.APIConnectionError("x").hint
    assert "HTTPS_PROXY" in hint and "HTTP_PROXY" in hint.replace("HTTPS_PROXY", "")
