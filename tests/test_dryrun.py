"""--dry-run: the exact messages and options, an estimate, and never the key."""
from __future__ import annotations

from upstage_magic.dryrun import (
    describe_request,
    estimate_request_tokens,
    public_options,
)


def test_shows_messages_options_and_estimate():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x" * 400}]
    text = describe_request(messages, {"temperature": 0.2, "stream": True, "top_p": None},
                            model="solar-pro3")
    assert text.startswith("Dry run: nothing was sent.\n")
    assert "model: solar-pro3 · 2 messages · ~" in text
    assert estimate_request_tokens(messages) == (3 + 4) + (100 + 4)
    assert f"~{estimate_request_tokens(messages)} prompt tokens" in text
    assert 'options: {"stream": true, "temperature": 0.2}' in text
    assert "── system ──\nBe brief.\n\n── user ──\n" + "x" * 400 in text


def test_never_shows_the_key(monkeypatch):
    key = "up_" + "Dr7" * 10  # built at run time
    monkeypatch.setenv("UPSTAGE_API_KEY", key)
    opts = {"api_key": key, "headers": {"Authorization": f"Bearer {key}"}, "model": "m",
            "extra_body": {"note": key}}
    text = describe_request([{"role": "user", "content": f"my key {key}"}], opts)
    assert key not in text
    assert "api_key" not in text and "Authorization" not in text
    assert "model: m ·" in text
    assert public_options(opts) == {"model": "m", "extra_body": {"note": key}}  # masked on output


def test_list_content_is_shown_as_json():
    text = describe_request([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    assert '"text": "hi"' in text and "model: (default) · 1 message ·" in text
