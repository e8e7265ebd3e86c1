"""providers/base.py: model resolution, format_prompt, create_async, create_completion."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from upstage_magic.errors import UpstageError
from upstage_magic.events import FinishReason, Reasoning, Usage
from upstage_magic.providers.base import AsyncGeneratorProvider, ProviderModelMixin, format_prompt


class FakeProvider(AsyncGeneratorProvider, ProviderModelMixin):
    """Yields a fixed script of chunks; records calls and closes."""

    working = True
    default_model = "fake-default"
    models = ["fake-default", "fake-big"]
    model_aliases = {"fake": "fake-default", "big": "fake-big"}
    script: list[Any] = ["Hel", Reasoning("hmm"), "lo", FinishReason("stop"), Usage(1, 2, 3)]
    calls: list[tuple[str, Any, dict]] = []
    closed: list[asyncio.AbstractEventLoop] = []

    @classmethod
    async def create_async_generator(cls, model, messages, proxy=None, **kwargs):
        cls.calls.append((cls.get_model(model), messages, kwargs))
        for item in cls.script:
            await asyncio.sleep(0)
            yield item

    @classmethod
    async def aclose(cls) -> None:
        cls.closed.append(asyncio.get_running_loop())


@pytest.fixture(autouse=True)
def reset_fake():
    FakeProvider.calls = []
    FakeProvider.closed = []


# --------------------------------------------------------------------------- get_model


@pytest.mark.parametrize(
    ("given", "expected"),
    [("fake", "fake-default"), ("big", "fake-big"), ("fake-big", "fake-big"), ("", "fake-default"),
     (None, "fake-default"), ("  ", "fake-default"), ("unknown-model-1", "unknown-model-1")],
)
def test_get_model(given, expected):
    assert FakeProvider.get_model(given) == expected


def test_get_model_resolves_an_aliased_default():
    class P(FakeProvider):
        default_model = "big"

    assert P.get_model(None) == "fake-big"


def test_upstage_get_model(monkeypatch):
    from upstage_magic.providers import Upstage

    monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
    assert Upstage.get_model("") == Upstage.default_model == "solar-pro4"
    assert Upstage.get_model("solar") == "solar-pro4"
    # one model table: retired and legacy names are sent as written (with a notice, see
    # test_request), so the server's own retired-model answer applies
    assert Upstage.get_model("solar-1-mini-chat") == "solar-1-mini-chat"
    assert Upstage.get_model("solar-mini") == "solar-mini"
    assert Upstage.get_model("solar-pro4") == "solar-pro4"
    assert Upstage.get_model("Solar-Typo") == "Solar-Typo"
    monkeypatch.setenv("UPSTAGE_MODEL", "solar-pro2")
    assert Upstage.get_model(None) == "solar-pro2"
    monkeypatch.setenv("UPSTAGE_MODEL", "solar")
    assert Upstage.get_model(None) == "solar-pro4"
    assert Upstage.models == ["solar-pro4", "solar-mini4", "syn-pro", "solar-pro3"]
    from upstage_magic import models

    assert Upstage.model_aliases == models.ALIASES == {"solar": "solar-pro4"}
    for name in Upstage.models:  # the provider's list is the table's current and older models
        assert models.model_info(name) is not None and models.retired_notice(name) is None
    assert Upstage.working is True
    assert Upstage.api_endpoint == "https://api.upstage.ai/v1/chat/completions"


def test_settings(monkeypatch):
    from upstage_magic import settings

    monkeypatch.setattr(settings, "_api_key", None)
    monkeypatch.delenv("UPSTAGE_API_KEY", raising=False)
    monkeypatch.delenv("UPSTAGE_BASE_URL", raising=False)
    monkeypatch.delenv("UPSTAGE_API_BASE", raising=False)
    monkeypatch.delenv("UPSTAGE_MODEL", raising=False)
    assert settings.get_api_key() is None
    assert settings.get_base_url() == "https://api.upstage.ai/v1"
    assert settings.env_model() == "solar-pro4"
    monkeypatch.setenv("UPSTAGE_API_KEY", "test-key-ENV")
    assert settings.get_api_key() == "test-key-ENV"
    settings.set_api_key("test-key-MEM")
    assert settings.get_api_key() == "test-key-MEM"
    settings.set_api_key(None)
    assert settings.get_api_key() == "test-key-ENV"
    monkeypatch.setenv("UPSTAGE_API_BASE", "https://api.upstage.ai/v1/solar")  # langchain's name
    assert settings.get_base_url() == "https://api.upstage.ai/v1/solar"
    monkeypatch.setenv("UPSTAGE_BASE_URL", "http://127.0.0.1:8000/v1/")  # ours wins
    assert settings.get_base_url() == "http://127.0.0.1:8000/v1"
    monkeypatch.setenv("UPSTAGE_MODEL", "solar-mini")
    assert settings.env_model() == "solar-mini"


# ------------------------------------------------------------------------- format_prompt


def test_format_prompt_single_message_is_its_text():
    assert format_prompt([{"role": "user", "content": "Hi"}]) == "Hi"


def test_format_prompt_conversation():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": [{"type": "text", "text": "Two "}, {"type": "text", "text": "parts"}]},
    ]
    assert format_prompt(messages) == "System: Be brief.\nUser: Hi\nAssistant: Hello\nUser: Two parts\nAssistant:"


def test_format_prompt_special_tokens_and_empty():
    assert format_prompt([{"role": "user", "content": "Hi"}], add_special_tokens=True) == "User: Hi\nAssistant:"
    assert format_prompt([]) == ""


# ------------------------------------------------------------- create_async / completion


async def test_create_async_joins_text_only():
    text = await FakeProvider.create_async("big", [{"role": "user", "content": "x"}], temperature=0)
    assert text == "Hello"
    assert FakeProvider.calls == [("fake-big", [{"role": "user", "content": "x"}], {"temperature": 0})]


def test_create_completion_from_sync_code():
    assert FakeProvider.create_completion("", [{"role": "user", "content": "x"}], top_p=1) == "Hello"
    assert FakeProvider.calls[0][0] == "fake-default" and FakeProvider.calls[0][2] == {"top_p": 1}
    # its own loop's resources were released before asyncio.run closed that loop
    assert len(FakeProvider.closed) == 1 and FakeProvider.closed[0].is_closed()


def test_create_completion_closes_even_on_error():
    class Broken(FakeProvider):
        script = ["partial", RuntimeError("boom")]

        @classmethod
        async def create_async_generator(cls, model, messages, proxy=None, **kwargs):
            yield "partial"
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        Broken.create_completion("", [])
    assert len(Broken.closed) == 1


async def test_create_completion_inside_running_loop_says_what_to_do():
    with pytest.raises(UpstageError) as info:
        FakeProvider.create_completion("", [{"role": "user", "content": "x"}])
    text = str(info.value)
    assert "await FakeProvider.create_async(" in text and "%%upstage" in text
    assert FakeProvider.calls == []


def test_base_is_abstract():
    with pytest.raises(NotImplementedError):
        AsyncGeneratorProvider.create_async_generator("m", [])


def test_base_module_does_not_import_aiohttp():
    import subprocess
    import sys

    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('upstage_magic.providers.base', "
        "'upstage_magic/providers/base.py')\n"
        "import upstage_magic\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules[spec.name] = mod\n"
        "spec.loader.exec_module(mod)\n"
        "print('aiohttp' in sys.modules)\n"
    )
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "False"


def test_api_key_kwarg_is_masked_in_frames_that_show_kwargs():
    """A verbose traceback prints kwargs by repr: the key passed as api_key= shows as ***."""
    seen: list[str] = []

    class Peek(AsyncGeneratorProvider):
        @classmethod
        async def create_async_generator(cls, model, messages, proxy=None, **kwargs):
            seen.append(repr(kwargs))
            yield "ok"

    assert Peek.create_completion("m", [], api_key="test-key-SECRET123") == "ok"
    assert seen and "test-key-SECRET123" not in seen[0] and "***" in seen[0]
