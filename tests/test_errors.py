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
    status_error,
)
from upstage_magic.secrets import mask_secrets, redact, register_secret


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
    fake_key = "up_" + "ABCDEFGHIJKLMNOPQRSTUV"  # built at run time: no key-shaped literal in the repo
    text = redact(f"Authorization: Bearer abcdefgh1234 and {fake_key}")
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


REAL_SHAPED = "up_" + "Ab3" * 10  # the shape of an Upstage key (up_ + 30 alphanumerics)


@pytest.mark.parametrize(
    "text",
    ["group_by_category", "set_up_database_connection()", "backup_20240101.csv",
     "pick_up_the_pieces_and_more_words", "up_to_date", "cleanup_" + "x" * 30,
     "start_up_" + "A" * 25, "up_" + "A" * 25 + "_v2"],
)
def test_redact_leaves_ordinary_identifiers_alone(text):
    assert redact(text) == text
    assert redact(f"error in {text}: boom") == f"error in {text}: boom"


def test_redact_masks_standalone_upstage_key_shapes():
    for text in (REAL_SHAPED, f"key={REAL_SHAPED}", f'"{REAL_SHAPED}"', f"({REAL_SHAPED}).",
                 f"Authorization: Bearer {REAL_SHAPED}"):
        out = redact(text)
        assert "Ab3Ab3" not in out and "***" in out, (text, out)


def test_mask_secrets_masks_only_registered_secrets():
    secret = "test-key-SECRET123-mask"
    register_secret(secret)
    answer = (f"Use group_by_category, set_up_database_connection() and backup_20240101.csv; "
              f"Bearer tokenize_me_please; {REAL_SHAPED}; and the key {secret}.")
    masked = mask_secrets(answer)
    assert secret not in masked
    assert masked == answer.replace(secret, "***")
    assert mask_secrets(42) == "42"
    from upstage_magic import secrets

    assert "mask_secrets" in secrets.__all__ and not hasattr(errors, "mask_secrets")  # one home


def test_str_puts_a_full_stop_between_message_and_hint():
    assert str(UpstageError("Not Found", hint="Check it.")) == "Not Found. Check it."
    assert str(UpstageError("Gone.", hint="Check it.")) == "Gone. Check it."
    assert str(UpstageError("Why?", hint="Check it.")) == "Why? Check it."
    assert str(UpstageError("plain", hint="")) == "plain"
    text = str(status_error(404, server_message="Not Found", url="http://h/v1/x", model="m"))
    assert "Not Found. Check" in text


def test_404_without_model_mention_points_at_the_base_url():
    err = status_error(404, server_message="Not Found", what="chat request",
                       url="http://user:pw@127.0.0.1:8123/chat/completions?api-version=1&k=s#frag",
                       model="solar-mini")
    assert type(err) is ModelNotFoundError and err.status == 404
    text = str(err)
    assert "http://127.0.0.1:8123/chat/completions" in text
    assert "api-version" not in text and "frag" not in text and "pw" not in text
    assert "UPSTAGE_BASE_URL" in err.hint and "/v1" in err.hint
    assert "model name" not in text
    # no server message and no envelope: still the URL hint
    assert "UPSTAGE_BASE_URL" in status_error(404, url="http://h/x").hint
    assert "UPSTAGE_BASE_URL" in status_error(404).hint  # backwards compatible call


def test_404_about_the_model_keeps_the_model_hint():
    msg = "The model `solar-nope` does not exist or you do not have access to it."
    body = {"error": {"message": msg, "type": "invalid_request_error", "code": "model_not_found"}}
    for kw in (dict(code="model_not_found", body=body), dict(), dict(model="solar-nope")):
        err = status_error(404, server_message=msg, url="http://h/v1/chat/completions", **kw)
        assert type(err) is ModelNotFoundError
        assert "model name" in err.hint and "UPSTAGE_BASE_URL" not in err.hint
        assert "http://h/v1" not in str(err)  # the URL is not the problem
    err = status_error(404, server_message="unknown: solar-x", model="solar-x")
    assert "model name" in err.hint
    err = status_error(404, code="model_not_found")
    assert "model name" in err.hint
