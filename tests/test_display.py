"""Coalescer: first text at once, then at most one render per interval, final flush."""
from __future__ import annotations

import re

from upstage_magic.notebook.display import Coalescer


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(interval=0.1, **kw):
    clock = FakeClock()
    seen: list[int] = []
    c = Coalescer(lambda: seen.append(c._length), interval=interval, clock=clock, **kw)
    return c, seen, clock


def test_first_change_renders_at_once():
    c, seen, _ = make()
    c.changed(3)
    assert seen == [3] and c.renders == 1


def test_coalesces_within_interval_and_flushes_final():
    c, seen, clock = make()
    c.changed(1)
    for n in range(2, 7):
        clock.t += 0.01
        c.changed(n)
    assert seen == [1]
    clock.t += 0.06  # 0.11 since the first render
    c.changed(7)
    assert seen == [1, 7]
    c.changed(8)
    c.flush()
    assert seen[-1] == 8
    c.flush()  # nothing pending: no extra render
    assert c.renders == 3


def test_render_rate_bounded_for_many_changes():
    c, seen, clock = make(interval=0.1)
    for n in range(10_000):  # 10k changes over 10 s
        clock.t += 0.001
        c.changed(n + 1)
    c.flush()
    assert c.renders <= 10 / 0.1 + 2
    assert seen[-1] == 10_000


def test_poll_renders_pending_after_interval():
    c, seen, clock = make()
    c.changed(1)
    c.changed(2)
    assert not c.poll()
    clock.t += 0.2
    assert c.poll() and seen[-1] == 2
    assert not c.poll()


def test_flush_without_changes_does_nothing():
    c, seen, _ = make()
    c.flush()
    assert seen == [] and c.renders == 0


def test_long_text_interval_grows_with_bytes():
    c, seen, clock = make(interval=0.1, max_bytes_per_second=1000)
    c.changed(500)
    assert c.current_interval() == 0.5
    clock.t += 0.2
    c.changed(501)
    assert c.renders == 1
    clock.t += 0.4
    c.changed(502)
    assert c.renders == 2


class _Ex:
    """The parts of an Exchange a view reads (its text masked, as an Exchange's is)."""

    def __init__(self) -> None:
        self.raw = ""
        self.reasoning = ""
        self.tool_calls: list = []
        self.model = "m"
        self.status = "streaming"
        self.reasoning_seconds = None

    @property
    def text(self) -> str:
        from upstage_magic.secrets import mask_secrets

        return mask_secrets(self.raw)


def test_plain_view_writes_each_new_piece_once():
    import io

    from upstage_magic.notebook.display import PlainView

    out = io.StringIO()
    ex = _Ex()
    view = PlainView(ex, out=out)
    for part in ("Hel", "lo", " world"):
        ex.raw += part
        view.changed()
    assert out.getvalue() == "Hello world"
    ex.raw += "!"
    view.finish(None, "foot")
    assert out.getvalue() == "Hello world!\n[foot]\n"


def test_plain_view_never_writes_a_registered_key_in_parts():
    import io

    from upstage_magic.notebook.display import PlainView
    from upstage_magic.secrets import register_secret

    key = "canary-" + "k" * 6 + "Z9"
    register_secret(key)
    out = io.StringIO()
    ex = _Ex()
    view = PlainView(ex, out=out)
    for ch in f"the key is {key} ok":
        ex.raw += ch
        view.changed()
    view.finish(None, None)
    assert out.getvalue() == "the key is *** ok\n"


def test_rich_view_sends_sanitised_html_and_plain_text():
    from upstage_magic.notebook import display as d

    shown: list[dict] = []

    class Handle:
        def update(self, bundle, raw=True, **kw):
            shown.append(bundle)

    def fake_display(bundle, raw=True, display_id=None, **kw):
        shown.append(bundle)
        return Handle()

    ex = _Ex()
    view = d.RichView(ex, "markdown", display=fake_display)
    ex.raw = "Hi <b>x</b>"
    view.changed()
    view.finish(None, None)
    assert shown[-1]["text/plain"] == "Hi <b>x</b>" and "<b>" not in shown[-1]["text/html"]
    assert "&lt;b&gt;" in shown[-1]["text/html"] and "text/markdown" not in shown[-1]
    assert len(shown) == 1  # the final render repeats the last one: not sent again


def test_rich_view_warm_up_loads_markdown_it_but_loading_the_extension_does_not():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "ip = InteractiveShell.instance(); ip.run_line_magic('load_ext', 'upstage_magic')\n"
        "assert 'markdown_it' not in sys.modules, 'load_ext imported markdown_it'\n"
        "from upstage_magic.notebook.display import RichView\n"
        "RichView(None, 'markdown', display=lambda *a, **k: None)\n"
        "assert 'markdown_it' in sys.modules, 'warm-up did not reach the parser'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _exchange(chunks, usage=None):
    from tests.support.fake import answer

    return answer(None, "q", *chunks, *([usage] if usage is not None else []))


def test_stats_parts_shared_by_footer_and_widget_status():
    from upstage_magic.events import Usage
    from upstage_magic.notebook.chatview import fmt_stats
    from upstage_magic.notebook.display import footer_text, stats_parts

    for ex in (_exchange(["a", "b", "c"]), _exchange(["a", "b"], Usage(4, 9, 13))):
        parts = stats_parts(ex)
        assert parts and all(p in fmt_stats("done", ex) for p in parts)
    # The footer is one short line; estimated numbers (no usage from the server) carry a "~".
    estimated = _exchange(["a", "b", "c"])
    line = footer_text(estimated, "done")
    assert re.fullmatch(r"fake-model · ~\d+ in / ~3 out · \d+\.\d s", line), line
    assert "chunks" not in line
    counted = _exchange(["a", "b"], Usage(4, 9, 13))
    assert re.fullmatch(r"fake-model · 4 in / 9 out · \d+\.\d s", footer_text(counted, "done"))
    assert stats_parts(counted)[0] == "4 prompt + 9 answer tokens"
    assert "first answer token" in fmt_stats("done", counted) and "TTFT" not in fmt_stats("done", counted)


def test_stats_count_reasoning_apart_and_time_the_answer_phase():
    from tests.support.fake import request
    from upstage_magic.events import Reasoning, Usage
    from upstage_magic.notebook.display import footer_text, stats_parts
    from upstage_magic.session import ChatSession, Exchange

    now = [0.0]
    for stream in (True, False):
        now[0] = 0.0
        ex = Exchange(request("q", stream=stream), ChatSession(), clock=lambda: now[0])
        now[0] = 0.1
        ex.apply([Reasoning("let me think")])
        now[0] = 2.1
        ex.apply(["Answer"])
        now[0] = 3.1
        ex.apply([" done", Usage.from_dict({"prompt_tokens": 5, "completion_tokens": 130,
                                             "completion_tokens_details": {"reasoning_tokens": 100},
                                             "prompt_tokens_details": {"cached_tokens": 4}})])
        ex._end()
        parts = stats_parts(ex)
        assert parts[0] == "5 prompt + 30 answer + 100 reasoning tokens (4 prompt cached)"
        line = footer_text(ex, "done")
        assert line == "fake-model · 5 in / 30 out (100 reasoning) · 3.1 s"  # timings: metadata, history
        if not stream:
            assert not any("first" in p or "tok/s" in p for p in parts)
            continue
        assert "first byte 0.10 s" in parts and "first answer token 2.10 s" in parts
        assert "30 tok/s" in parts  # 30 answer tokens over the 1 s answer phase, not 130 over 3 s
        assert ex.reasoning_seconds == 2.0
