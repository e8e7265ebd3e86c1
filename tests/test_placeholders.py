"""Placeholders are filled from the notebook only outside code, and never fail the cell."""
from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from upstage_magic.notebook.fix import ErrorLog, record_exception
from upstage_magic.placeholders import Filled, code_spans, fill

NS = {"name": "Bob", "i": 3, "seq": [1, 2, 3], "d": {"k": "v"}, "n": 7}
FSTRING = 'print(f"Hello, {name} #{i}!")'


class Obj:
    name = "Ada"
    _secret = "no"

    @property
    def broken(self):
        raise RuntimeError("boom")


# -- the rules kept from interpolate() ---------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {who}", "Hi World"),
        ("{obj.name} {seq[0]} {seq[-1]} {d[k]} {who!r} {n:>4}", "Ada 1 3 v 'World'    7"),
        ("{{who}} stays", "{who} stays"),
        ("def f(): return {}", "def f(): return {}"),
        ('{"a": {"b": [1, {"c": 2}]}}', '{"a": {"b": [1, {"c": 2}]}}'),
        ("{x: 1 for x in y}", "{x: 1 for x in y}"),
        ("{ who }", "{ who }"),
        ("{f()} and {1}", "{f()} and {1}"),
        ("lone { and } braces", "lone { and } braces"),
        ("{n:.2f} {who!a}", "7.00 'World'"),
    ],
)
def test_rules_outside_code(template, expected):
    ns = {"who": "World", "obj": Obj(), "seq": [1, 2, 3], "d": {"k": "v"}, "n": 7, "f": print}
    assert fill(template, ns).text == expected


@pytest.mark.parametrize(
    "template",
    ["{nobody}", "{obj._secret}", "{obj.__class__}", "{_hidden}", "{seq[7]}", "{obj.missing}",
     "{n:zz}", "{obj.broken}", "{d['k']}"],
)
def test_what_cannot_be_filled_is_left_as_written_and_reported(template):
    ns = {"obj": Obj(), "seq": [1], "n": 7, "_hidden": 1, "d": {"k": "v"}}
    got = fill(f"a {template} b", ns)
    assert got.text == f"a {template} b"
    assert got.left == [template]
    assert got.filled == []
    assert got.reasons[template]


def test_quoted_key_hint_names_the_str_format_spelling():
    got = fill("{d['a']} and {d[b]}", {"d": {"a": 1}})
    assert "{d[a]}" in got.reasons["{d['a']}"] and "without quotes" in got.reasons["{d['a']}"]
    assert "without quotes" not in got.reasons["{d[b]}"]
    assert "{d[a]}" in (got.summary() or "")


# -- code is never touched -----------------------------------------------------------------


def test_pasted_fstring_outside_code_is_filled_and_reported():
    got = fill(FSTRING, NS)
    assert got.text == 'print(f"Hello, Bob #3!")'
    assert got.filled == ["{name}", "{i}"]
    assert got.summary() == "filled: {name}, {i}"


@pytest.mark.parametrize(
    "wrap",
    [
        "```python\n{}\n```",
        "~~~\n{}\n~~~",
        "````\n```\n{}\n```\n````",  # a shorter fence inside does not close a longer one
        "```\n{}\n`````",  # a longer closing fence closes
        "  ```py\n{}\n  ```",
        "Explain `{}` please",
        "Explain ``{}`` please",
    ],
)
def test_pasted_fstring_inside_code_is_sent_byte_for_byte(wrap):
    text = "About {name}:\n" + wrap.format(FSTRING) + "\nThanks {name}."
    got = fill(text, NS)
    assert FSTRING in got.text
    assert got.text.startswith("About Bob:\n") and got.text.endswith("Thanks Bob.")
    assert got.filled == ["{name}"]


def test_unclosed_fence_is_code_to_the_end():
    got = fill("About {name}:\n```\n" + FSTRING + "\nThanks {name}.", NS)
    assert got.text == "About Bob:\n```\n" + FSTRING + "\nThanks {name}."


def test_tilde_fence_is_not_closed_by_backticks_nor_by_a_shorter_fence():
    text = "~~~~\n{name}\n```\n~~~\n{i}\n~~~~\n{name}"
    assert fill(text, NS).text == "~~~~\n{name}\n```\n~~~\n{i}\n~~~~\nBob"


def test_escaped_braces_inside_code_stay_doubled():
    text = "```\n{{name}}\n```\n`{{name}}` and {{name}}"
    assert fill(text, NS).text == "```\n{{name}}\n```\n`{{name}}` and {name}"


def test_unmatched_backtick_is_text_and_spans_stop_at_a_blank_line():
    assert fill("a ` b {name}", NS).text == "a ` b Bob"
    assert fill("x `{name}\n\n{name}` y", NS).text == "x `Bob\n\nBob` y"
    # a run of two does not close a run of one
    assert fill("`a``{name}``b` {i}", NS).text == "`a``{name}``b` 3"


def test_backtick_fence_with_backtick_in_info_string_is_inline_code():
    text = "```a`b``` {name}\n{i}"
    assert code_spans(text) == [(0, 9)]  # not a fence (info has a backtick): a span of three
    assert fill(text, NS).text == "```a`b``` Bob\n3"


# -- the report ------------------------------------------------------------------------------


def test_summary_lists_each_placeholder_once_in_order():
    got = fill("{name} {x!r} {name} {i} {x!r}", NS)
    assert got.summary() == "filled: {name}, {i} · left as written: {x!r}"


def test_merge_gives_one_summary_for_prompt_and_system():
    prompt = fill("{name} {x}", NS)
    system = fill("{i} {x} {y}", NS)
    both = prompt.merge(system)
    assert both.text == prompt.text
    assert both.summary() == "filled: {name}, {i} · left as written: {x}, {y}"
    assert prompt.filled == ["{name}"]  # merge does not change its inputs


def test_summary_is_none_when_nothing_looked_like_a_placeholder():
    assert fill("```\n{name}\n```\n{{name}} {}", NS).summary() is None
    assert Filled("x").summary() is None


def test_raw_sends_everything_as_written():
    got = fill("{name} {{x}} {nope}", NS, raw=True)
    assert got.text == "{name} {{x}} {nope}"
    assert got.summary() is None


# -- In / Out / Err ----------------------------------------------------------------------------


def test_in_and_out_come_from_ipythons_namespace():
    ns = {"In": ["", "x = 1", "df.head()"], "Out": {2: "the head"}}
    got = fill("Cell: {In[2]} gave {Out[2]}; {Out[1]}", ns)
    assert got.text == "Cell: df.head() gave the head; {Out[1]}"
    assert got.left == ["{Out[1]}"]


def _error_log() -> ErrorLog:
    log = ErrorLog()
    try:
        {}["missing"]
    except KeyError as exc:
        log.add(record_exception(exc, execution_count=3, source='{}["missing"]'))
    return log


def test_err_gives_the_error_text_of_that_cell():
    log = _error_log()
    got = fill("Why {Err[3]}? And {Err[4]}. Type: {Err[3].type}", {}, errors=log)
    assert "KeyError: 'missing'" in got.text
    assert "Traceback" in got.text
    assert "{Err[4]}" in got.text  # cell 4 had no error: left as written
    assert got.text.endswith("Type: KeyError")
    assert got.filled == ["{Err[3]}", "{Err[3].type}"] and got.left == ["{Err[4]}"]


def test_err_is_not_in_the_namespace_and_a_user_err_wins():
    log = _error_log()
    ns: dict = {}
    fill("{Err[3]}", ns, errors=log)
    assert "Err" not in ns
    assert fill("{Err[3]}", {"Err": {3: "mine"}}, errors=log).text == "mine"
    assert fill("{Err[3]}", {}).left == ["{Err[3]}"]  # no log given


def test_err_mapping_is_read_only():
    log = _error_log()
    with pytest.raises(TypeError):
        log[5] = "x"  # type: ignore[index]


# -- property: text without braces outside code comes back unchanged --------------------------


@given(st.text(alphabet=st.sampled_from(list("ab {}`~\n_.[]!:rx")), max_size=60))
def test_never_raises_and_code_is_preserved(text):
    got = fill(text, {"a": 1, "b": "B", "x": [0]})
    for start, end in code_spans(text):
        # every code span of the input appears unchanged in the output
        assert text[start:end] in got.text


def _naive_inline_spans(text: str) -> list[tuple[int, int]]:
    """The CommonMark rule written plainly (quadratic): the reference for the fast scan."""
    spans = []
    i = 0
    while i < len(text):
        if text[i] != "`":
            i += 1
            continue
        j = i
        while j < len(text) and text[j] == "`":
            j += 1
        n = j - i
        k = j
        close = None
        while k < len(text):
            if text[k] == "\n" and text[k + 1:].lstrip(" \t").startswith("\n") | (text[k + 1:].strip(" \t") == ""):
                break  # a blank line ends the paragraph
            if text[k] == "`":
                e = k
                while e < len(text) and text[e] == "`":
                    e += 1
                if e - k == n:
                    close = e
                    break
                k = e
            else:
                k += 1
        if close is None:
            i = j
        else:
            spans.append((i, close))
            i = close
    return spans


@given(st.text(alphabet=st.sampled_from(list("`a \n\t")), max_size=80))
def test_inline_spans_match_the_plain_rule(text):
    assume(not any(line.lstrip(" \t").startswith("```") for line in text.split("\n")))  # no fences
    assert code_spans(text) == _naive_inline_spans(text)
