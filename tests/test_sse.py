"""The SSE decoder: WHATWG line/field rules, any byte split, memory guard, fuzzing."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upstage_magic.errors import StreamError, UpstageError
from upstage_magic.providers import sse
from upstage_magic.providers.sse import ServerSentEvent as E
from upstage_magic.providers.sse import SSEDecoder, as_event


class Decoder(SSEDecoder):
    """The decoder with every item shown as a ServerSentEvent, to compare whole events."""

    def feed(self, chunk: bytes) -> list[E]:  # type: ignore[override]
        return [as_event(i) for i in super().feed(chunk)]

    def flush(self) -> list[E]:  # type: ignore[override]
        return [as_event(i) for i in super().flush()]


def decode(chunks: list[bytes], *, flush: bool = True) -> list[E]:
    d = Decoder()
    out: list[E] = []
    for c in chunks:
        out += d.feed(c)
    if flush:
        out += d.flush()
    return out


def every_split(stream: bytes):
    """The stream cut in two at every byte position."""
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]


def one_byte_chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


# ---------------------------------------------------------------- basic fields


def test_single_event():
    assert decode([b"data: hello\n\n"]) == [E("hello")]


def test_nothing_until_blank_line():
    d = Decoder()
    assert d.feed(b"data: hello\n") == []
    assert d.feed(b"\n") == [E("hello")]


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
def test_line_endings(nl):
    stream = b"data: a" + nl + b"data: b" + nl + nl + b"event: x" + nl + b"data: c" + nl + nl
    assert decode([stream]) == [E("a\nb"), E("c", event="x")]
    for chunks in every_split(stream):
        assert decode(chunks) == [E("a\nb"), E("c", event="x")]


def test_cr_then_lf_across_chunks_is_one_line_end():
    # "data: a\r" | "\n" | "\r\n" -> one CRLF line end, then a blank line
    assert decode([b"data: a\r", b"\n", b"\r\n"]) == [E("a")]
    # CR, (empty chunk), LF is still one line end
    assert decode([b"data: a\r", b"", b"\ndata: b\r", b"\n\r", b"\n"]) == [E("a\nb")]


def test_cr_cr_is_two_line_ends():
    assert decode([b"data: a\r", b"\rdata: b\n\n"]) == [E("a"), E("b")]


def test_lone_cr_at_chunk_end_dispatches_without_waiting():
    d = Decoder()
    assert d.feed(b"data: a\r\r") == [E("a")]


def test_mixed_line_endings():
    assert decode([b"data: a\rdata: b\r\ndata: c\n\r\n"]) == [E("a\nb\nc")]


def test_comments_ignored():
    assert decode([b": keep-alive\n\n:another\ndata: x\n: mid\n\n"]) == [E("x")]


def test_comment_only_block_dispatches_nothing():
    assert decode([b": ping\n\n: ping\n\n"]) == []


def test_event_id_retry_fields():
    stream = b"event: delta\nid: 42\nretry: 1500\ndata: {}\n\n"
    assert decode([stream]) == [E("{}", event="delta", id="42", retry=1500)]


def test_id_persists_across_events_and_event_type_resets():
    stream = b"id: 7\nevent: a\ndata: 1\n\ndata: 2\n\nid\ndata: 3\n\n"
    assert decode([stream]) == [E("1", event="a", id="7"), E("2", id="7"), E("3", id="")]


def test_id_with_nul_ignored():
    assert decode([b"id: 1\ndata: a\n\nid: x\x00y\ndata: b\n\n"]) == [E("a", id="1"), E("b", id="1")]


@pytest.mark.parametrize("value", [b"abc", b"1.5", b"-1", b"", b" 10", b"\xef\xbc\x91"])  # last: fullwidth 1
def test_retry_only_if_ascii_digits(value):
    assert decode([b"retry: " + value + b"\ndata: a\n\n"]) == [E("a")]


def test_only_one_leading_space_stripped():
    assert decode([b"data:  two\ndata:none\ndata:\tt\n\n"]) == [E(" two\nnone\n\tt")]


def test_colon_in_value_kept():
    assert decode([b'data: {"a": "b:c"}\n\n']) == [E('{"a": "b:c"}')]


def test_field_without_colon_is_empty_value():
    # "data" alone appends an empty line; "event" alone clears the type
    assert decode([b"data\ndata\n\n"]) == [E("\n")]
    assert decode([b"data: x\ndata\n\n"]) == [E("x\n")]
    assert decode([b"event\ndata: x\n\n"]) == [E("x")]


def test_empty_data_field_dispatches_empty_string():
    assert decode([b"data:\n\n"]) == [E("")]
    assert decode([b"data: \n\n"]) == [E("")]


def test_no_data_no_event():
    assert decode([b"event: x\nid: 1\nretry: 5\n\n\n\n"]) == []
    # but the id still counts for later events
    assert decode([b"id: 1\n\ndata: a\n\n"]) == [E("a", id="1")]


def test_unknown_fields_ignored():
    assert decode([b"foo: bar\ndata: a\nDATA: b\n\n"]) == [E("a")]


def test_multiline_data():
    assert decode([b"data: line1\ndata: line2\ndata: line3\n\n"]) == [E("line1\nline2\nline3")]


def test_bom_stripped_only_at_start():
    assert decode([b"\xef\xbb\xbfdata: a\n\n"]) == [E("a")]
    assert decode([b"\xef\xbb", b"\xbfdata: a\n\n"]) == [E("a")]
    # a BOM later in the stream is ordinary text, so this line is not a data field
    assert decode([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [E("a")]


# ---------------------------------------------------------------- end of stream


def test_flush_emits_event_without_blank_line():
    d = Decoder()
    assert d.feed(b"data: a\n\ndata: b\n") == [E("a")]
    assert d.flush() == [E("b")]


def test_flush_finishes_unterminated_line():
    d = Decoder()
    assert d.feed(b"event: e\ndata: partial") == []
    assert d.flush() == [E("partial", event="e")]


def test_flush_nothing_pending():
    d = Decoder()
    assert d.feed(b"data: a\n\n") == [E("a")]
    assert d.flush() == []
    assert Decoder().flush() == []


def test_flush_after_cr():
    assert decode([b"data: a\r"]) == [E("a")]


def test_decoder_reusable_after_flush():
    d = Decoder()
    d.feed(b"id: 1\ndata: a")
    assert d.flush() == [E("a", id="1")]
    assert d.feed(b"data: b\n\n") == [E("b")]


# ---------------------------------------------------------------- UTF-8


@pytest.mark.parametrize("text", ["привет мир", "안녕하세요 세계", "emoji 😀🎉 done", "mixé ∑ 中文"])
def test_multibyte_split_at_every_byte(text):
    stream = ("data: " + text + "\n\n").encode()
    for chunks in every_split(stream):
        assert decode(chunks) == [E(text)]
    assert decode(one_byte_chunks(stream)) == [E(text)]


def test_cyrillic_split_mid_character():
    raw = "Привет".encode()
    chunks = [b"data: " + raw[:3], raw[3:7], raw[7:] + b"\n", b"\n"]
    assert raw[:3].decode("utf-8", "ignore") != raw[:3].decode("utf-8", "replace")  # really mid-char
    assert decode(chunks) == [E("Привет")]


def test_invalid_utf8_replaced_not_raised():
    assert decode([b"data: a\xff\xfeb\n\n"]) == [E("a\ufffd\ufffdb")]
    # a truncated sequence right before the line end
    assert decode([b"data: x\xe4\xb8", b"\n\n"]) == [E("x\ufffd")]
    # and at the very end of the stream
    assert decode([b"data: x\xe4"]) == [E("x\ufffd")]


# ---------------------------------------------------------------- a recorded Upstage stream


def upstage_stream(n: int = 30) -> tuple[bytes, list[str]]:
    """A realistic chat.completion.chunk stream: role, ~n text deltas, finish, usage, [DONE]."""
    words = ["Hello", " 세계", "!", " Here", " is", " `code`", " 😀", " and", " Привет", ","]
    base = {"id": "chatcmpl-abc123", "object": "chat.completion.chunk", "created": 1732530000,
            "model": "solar-pro3-250101", "system_fingerprint": None}
    payloads: list[dict] = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}])]
    for i in range(n):
        payloads.append(dict(base, choices=[{"index": 0, "delta": {"content": words[i % len(words)]},
                                             "logprobs": None, "finish_reason": None}]))
    payloads.append(dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]))
    payloads.append(dict(base, choices=[], usage={"prompt_tokens": 12, "completion_tokens": n,
                                                  "total_tokens": 12 + n}))
    datas = [json.dumps(p, ensure_ascii=False) for p in payloads] + ["[DONE]"]
    return b"".join(b"data: " + d.encode() + b"\n\n" for d in datas), datas


def test_recorded_stream_whole():
    stream, datas = upstage_stream()
    events = decode([stream])
    assert [e.data for e in events] == datas
    assert events[-1].data == "[DONE]"
    assert json.loads(events[-2].data)["usage"]["completion_tokens"] == 30


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"])
def test_recorded_stream_split_at_every_byte(nl):
    stream, datas = upstage_stream()
    stream = stream.replace(b"\n", nl)
    whole = decode([stream])
    assert [e.data for e in whole] == datas
    for chunks in every_split(stream):
        assert decode(chunks) == whole
    assert decode(one_byte_chunks(stream)) == whole


def test_recorded_stream_events_arrive_as_soon_as_complete():
    stream, datas = upstage_stream(5)
    d = Decoder()
    seen: list[str] = []
    for i in range(len(stream)):
        seen += [e.data for e in d.feed(stream[i : i + 1])]
        # after each byte, exactly the events whose blank line has been read are out
        assert seen == datas[: stream[: i + 1].count(b"\n\n")]
    assert d.flush() == []


# ---------------------------------------------------------------- size and linearity


def test_large_line_in_small_chunks_is_buffered_as_pieces():
    line = b"data: " + b"x" * (5 * 1024 * 1024)
    d = Decoder()
    for i in range(0, len(line), 1024):
        assert d.feed(line[i : i + 1024]) == []
    # the partial line is a list of the chunks, not one ever-growing bytes object
    assert isinstance(d._pending, list) and len(d._pending) == -(-len(line) // 1024)
    events = d.feed(b"\n\n")
    assert len(events) == 1 and len(events[0].data) == 5 * 1024 * 1024
    assert d._pending == []


def test_partial_line_pieces_are_not_copied():
    """Each feed without a line end appends its chunk object itself (no join/copy yet)."""
    d = Decoder()
    chunks = [b"data: "] + [bytes([65 + i % 26]) * 100 for i in range(500)]
    for c in chunks:
        assert d.feed(c) == []
    assert len(d._pending) == 501
    assert all(p is c for p, c in zip(d._pending, chunks, strict=False))
    assert d.feed(b"\n\n") == [E(b"".join(chunks[1:]).decode())]


def test_line_over_limit_raises_stream_error(monkeypatch):
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 1000)
    d = Decoder()
    d.feed(b"data: " + b"a" * 500)
    with pytest.raises(StreamError, match="too large"):
        d.feed(b"a" * 600)
    # memory released
    assert d._pending == []


@pytest.mark.parametrize(
    "chunks",
    [
        [b"data: " + b"a" * 1001 + b"\n\n"],  # a whole long line in one chunk
        [b"data: ok\n\ndata: " + b"a" * 1001],  # a long unterminated tail
        [b"data: " + b"a" * 600, b"a" * 600 + b"\n\n"],  # a long line completed by a newline
    ],
)
def test_line_over_limit_raises_in_every_shape(monkeypatch, chunks):
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 1000)
    with pytest.raises(StreamError, match="too large"):
        decode(chunks)


def test_line_at_limit_ok(monkeypatch):
    monkeypatch.setattr(sse, "MAX_LINE_BYTES", 1000)
    line = b"data: " + b"a" * 994
    assert decode([line[:500], line[500:], b"\n\n"]) == [E("a" * 994)]


def test_limit_default_is_16_mib():
    assert sse.MAX_LINE_BYTES == 16 * 1024 * 1024


# ---------------------------------------------------------------- fuzzing


SSE_ALPHABET = st.sampled_from(
    [b"data:", b"data: ", b"event:", b"id:", b"retry:", b":", b" ", b"\n", b"\r", b"\r\n", b"x", b"1",
     b"\x00", b"\xff", b"\xe4\xb8", b"\xad", "😀".encode(), b"\xef\xbb\xbf", b"[DONE]", b'{"a":1}']
)
sse_like = st.lists(SSE_ALPHABET, max_size=60).map(b"".join)
any_bytes = st.one_of(st.binary(max_size=300), sse_like)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points:
        out.append(data[prev:p])
        prev = p
    out.append(data[prev:])
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_bytes, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=20))
def test_fuzz_split_invariance(data, cuts):
    try:
        whole = decode([data])
    except UpstageError:  # pragma: no cover - only oversized lines raise, and these are small
        return
    assert decode(split_at(data, cuts)) == whole
    assert decode(one_byte_chunks(data)) == whole


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(any_bytes, max_size=10))
def test_fuzz_only_package_errors(chunks):
    try:
        events = decode(chunks)
    except UpstageError:
        return
    for e in events:
        assert isinstance(e.data, str)
        assert e.retry is None or e.retry >= 0
        assert e.id is None or "\x00" not in e.id


@settings(max_examples=100, deadline=None)
@given(data=any_bytes, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_fuzz_small_limit_raises_only_stream_error(data, cuts):
    old = sse.MAX_LINE_BYTES
    sse.MAX_LINE_BYTES = 16
    try:
        try:
            decode(split_at(data, cuts))
        except StreamError:
            pass
    finally:
        sse.MAX_LINE_BYTES = old


def test_pending_fields_apply_to_first_event_of_next_chunk():
    d = Decoder()
    assert d.feed(b"id: 5\nevent: first\nretry: 9\n") == []
    assert d.feed(b"data: a\n\ndata: b\n\ndata: c\n\n") == [
        E("a", event="first", id="5", retry=9), E("b", id="5"), E("c", id="5")]
    d = Decoder()
    assert d.feed(b"data: x\n") == []
    assert d.feed(b"data: a\n\ndata: b\n\n") == [E("x\na"), E("b")]


def test_many_events_one_chunk_with_odd_ones_between():
    stream = b"data: 1\n\ndata: 2\n\n\n\ndata: 3\ndata: 4\n\nevent: e\ndata: 5\n\ndata: 6\n\ndata: 7"
    assert decode([stream]) == [E("1"), E("2"), E("3\n4"), E("5", event="e"), E("6"), E("7")]


def test_last_id_carried_into_a_run_of_data_events():
    d = Decoder()
    assert d.feed(b"id: 7\n\n") == []
    assert d.feed(b"data: a\n\ndata: b\n\n") == [E("a", id="7"), E("b", id="7")]


# ---------------------------------------------------------------- the result's two shapes


def test_plain_events_come_as_their_data_str():
    d = SSEDecoder()
    assert d.feed(b'data: {"a": 1}\n\ndata: [DONE]\n\n') == ['{"a": 1}', "[DONE]"]
    assert d.feed(b"event: message\ndata: m\n\n") == ["m"]  # the default type is plain
    assert d.feed(b"data: two\ndata: lines\n\n") == ["two\nlines"]


def test_events_with_a_type_id_or_retry_keep_them():
    d = SSEDecoder()
    assert d.feed(b"event: error\ndata: x\n\nretry: 5\ndata: y\n\ndata: z\n\n") == [
        E("x", event="error"), E("y", retry=5), "z"]
    # once an id was seen, every later event carries it (the WHATWG last event id)
    assert d.feed(b"id: 3\ndata: a\n\ndata: b\n\n") == [E("a", id="3"), E("b", id="3")]


def test_as_event():
    assert as_event("x") == E("x")
    assert as_event(E("x", event="e")) == E("x", event="e")
