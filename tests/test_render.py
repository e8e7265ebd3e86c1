"""Hostile answers come out harmless; normal Markdown, code, tables, math and images keep working."""
from __future__ import annotations

import html
import re

import pytest

from tests.test_render_props import code_blocks_text, html_problems, viewer_problems
from upstage_magic import render
from upstage_magic.render import (
    CSS,
    PYGMENTS_CLASSES,
    AnswerRenderer,
    export_markdown_text,
    is_unsafe_url,
    render_html,
    render_text_html,
)

# One payload per attack class named in issue 8, plus the usual XSS lists' shapes.
HOSTILE = {
    "script": "<script>window.pwned=1</script>",
    "img onerror": '<img src=x onerror="window.pwned=1">',
    "svg onload": "<svg onload=alert(1)>",
    "iframe srcdoc": '<iframe srcdoc="<script>parent.pwned=1</script>"></iframe>',
    "details ontoggle": "<details open ontoggle=alert(1)>",
    "raw a javascript": '<a href="javascript:alert(1)">raw</a>',
    "comment": "<!-- x --><img src=x onerror=alert(1)>",
    "mixed closing fence": "```\nsafe\n```~~~\n<img src=x onerror=alert(1)>\n```",
    "mixed closing fence 2": "~~~\nsafe\n~~~`\n<img src=x onerror=alert(1)>\n~~~",
    "info string injection": '```"><img src=x onerror=alert(1)>\ncode\n```',
    "info string class": "```x onmouseover=alert(1) class=mermaid\ncode\n```",
    "tab-only line": "para\n\t\n    <img src=x onerror=alert(1)>",
    "tab-only line in list": "- item\n\t\n      <img src=x onerror=alert(1)>",
    "nbsp javascript": "[x](\u00a0javascript:alert(1))",
    "bom javascript": "[x](\ufeffjavascript:alert(1))",
    "line separator javascript": "[x](\u2028javascript:alert(1))",
    "zero width javascript": "[x](\u200bjavascript:alert(1))",
    "tab in scheme": "[x](<java\tscript:alert(1)>)",
    "entity scheme": "[x](jav&#x61;script:alert(1))",
    "colon entity": "[x](javascript&colon;alert(1))",
    "backslash scheme": "[x](javascript\\:alert(1))",
    "greedy second link": "[a](https://ok.example)[b](javascript:alert(2))",
    "two bad links": "[a](javascript:alert(1))[b](javascript:alert(2))",
    "image inside link": "[![i](https://img.example/a.png)](javascript:alert(1))",
    "bad image inside good link": "[![i](javascript:alert(1))](https://ok.example)",
    "reference javascript": "[x][r]\n\n[r]: javascript:alert(1)",
    "autolink javascript": "<javascript:alert(1)>",
    "data url": "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "svg data image": "![x](data:image/svg+xml;base64,PHN2Zz4=)",
    "vbscript": "[x](vbscript:msgbox(1))",
    "mermaid block": "```mermaid\ngraph TD; A-->B; click A callback\n```",
    "language class": "```language-mermaid\nx\n```",
    "code closes pre": "```\n</code></pre><script>alert(1)</script>\n```",
    "inline code html": "`<img src=x onerror=alert(1)>`",
    "math text html": "$\\text{<img src=x onerror=alert(1)>}$",
    "math href": "$\\href{javascript:alert(1)}{x}$",
    "math style": "$\\style{background:url(https://evil.example)}{x}$",
    "math class": "$$\\class{mermaid}{x}$$",
    "table cell": "| a |\n|---|\n| <img src=x onerror=alert(1)> |",
    "heading": "# <img src=x onerror=alert(1)>",
    "title attribute": '[a](https://x.com "<img src=x onerror=alert(1)>")',
    "cdata": "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "nested tag": "<scr<script>ipt>alert(1)</script>",
}


@pytest.mark.parametrize("answer", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_answer_renders_only_allow_listed_html(answer):
    for prefix in [answer[:i] for i in range(len(answer) + 1)]:
        assert html_problems(render_html(prefix)) == []
        assert html_problems(render_html(prefix, load_images=True), load_images=True) == []


@pytest.mark.parametrize("answer", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_answer_exports_as_inert_markdown(answer):
    assert viewer_problems(export_markdown_text(answer)) == []


def test_raw_html_shows_as_text():
    out = render_html("<script>window.pwned=1</script> and <b>bold</b>")
    assert out == "<p>&lt;script&gt;window.pwned=1&lt;/script&gt; and &lt;b&gt;bold&lt;/b&gt;</p>\n"


def test_mixed_closing_fence_keeps_everything_in_the_code_block():
    out = render_html(HOSTILE["mixed closing fence"])
    # CommonMark: "```~~~" does not close the fence, so the img line is code text
    assert code_blocks_text(out) == ["safe\n```~~~\n<img src=x onerror=alert(1)>\n"]


def test_info_string_never_reaches_an_attribute():
    out = render_html(HOSTILE["info string injection"])
    assert out == '<pre class="um-code"><code>code\n</code></pre>\n'
    assert render.clean_language('"><img src=x onerror=alert(1)>') == "img"
    assert render.clean_language("c++ {.x}") == "c++"


@pytest.mark.parametrize("answer", [HOSTILE["mermaid block"], HOSTILE["language class"], HOSTILE["math class"],
                                    HOSTILE["info string class"]])
def test_no_mermaid_or_language_class(answer):
    """nbconvert's template runs mermaid on such blocks; JupyterLab pastes language-* classes."""
    out = render_html(answer)
    classes = " ".join(re.findall(r'class="([^"]*)"', out))
    assert "mermaid" not in classes and "language-" not in classes


def test_tab_only_line_then_indented_code_is_code_or_text_never_html():
    out = render_html(HOSTILE["tab-only line"])
    assert "<img" not in out and "&lt;img src=x onerror=alert(1)&gt;" in out


@pytest.mark.parametrize("key", ["nbsp javascript", "bom javascript", "line separator javascript",
                                 "zero width javascript", "tab in scheme", "entity scheme", "colon entity",
                                 "backslash scheme", "data url", "vbscript", "reference javascript"])
def test_unsafe_link_loses_href_keeps_text(key):
    out = render_html(HOSTILE[key])
    assert "href" not in out
    assert "x" in html.unescape(re.sub("<[^>]+>", "", out))


def test_every_link_of_a_run_is_checked():
    out = render_html(HOSTILE["greedy second link"])
    assert out == ('<p><a href="https://ok.example" target="_blank" rel="noopener noreferrer">a</a>b</p>\n')
    assert render_html(HOSTILE["two bad links"]) == "<p>ab</p>\n"


def test_image_inside_link():
    # the javascript: link goes, the image inside it is shown as the usual image link
    out = render_html(HOSTILE["image inside link"])
    assert out == ('<p><a class="um-image-link" href="https://img.example/a.png" target="_blank" '
                   'rel="noopener noreferrer">image: i (img.example)</a></p>\n')
    assert render_html(HOSTILE["bad image inside good link"]) == (
        '<p><a href="https://ok.example" target="_blank" rel="noopener noreferrer">'
        '<span class="um-image-link">image: i</span></a></p>\n')
    # inside a kept link, no nested <a>
    out = render_html("[![i](https://img.example/a.png)](https://ok.example)")
    assert out == ('<p><a href="https://ok.example" target="_blank" rel="noopener noreferrer">'
                   '<span class="um-image-link">image: i (img.example)</span></a></p>\n')


def test_links_open_in_new_tab_without_referrer():
    out = render_html("[docs](https://upstage.ai/docs?a=1&b=(2) \"T\") [m](mailto:a@b.c) [rel](../x.md) [f](#x)")
    assert out == (
        '<p><a href="https://upstage.ai/docs?a=1&amp;b=(2)" title="T" target="_blank" rel="noopener noreferrer">'
        'docs</a> <a href="mailto:a@b.c" target="_blank" rel="noopener noreferrer">m</a> rel f</p>\n'
    )


def test_remote_image_not_loaded_by_default():
    out = render_html('![a chart](https://host.example/c.png "T")')
    assert "<img" not in out
    assert out == ('<p><a class="um-image-link" href="https://host.example/c.png" title="T" target="_blank" '
                   'rel="noopener noreferrer">image: a chart (host.example)</a></p>\n')


def test_remote_image_loaded_when_allowed_http_only():
    assert render_html("![c](https://host.example/c.png)", load_images=True) == (
        '<p><img src="https://host.example/c.png" alt="c"></p>\n')
    for src in ["javascript:alert(1)", "data:image/png;base64,AA", "/local.png", "mailto:a@b.c"]:
        out = render_html(f"![c]({src})", load_images=True)
        assert "<img" not in out and "src=" not in out and "image: c" in out


def test_code_block_byte_exact_and_highlighted():
    code = "def f(a):\n    return '</code></pre><script>alert(1)</script>' if a < 1 else \"&amp;\"\n\n\t# end\n"
    out = render_html(f"Here:\n\n```python\n{code}```\n\nafter")
    assert code_blocks_text(out) == [code]
    assert '<span class="k">def</span>' in out and "<script" not in out
    assert html_problems(out) == []


@pytest.mark.parametrize("lang", ["", "no-such-language", "mermaid", "html", "x<y>"])
def test_code_block_unknown_or_any_language_byte_exact(lang):
    code = "\n<b>x</b> & `y`\n  \n"
    out = render_html(f"~~~{lang}\n{code}~~~")
    assert code_blocks_text(out) == [code]


def test_indented_and_nested_code_byte_exact():
    out = render_html("Para\n\n    <div>x</div>\n    if a < b: pass\n\n1. step\n\n   ```sh\n   echo '<b>'\n   ```\n")
    assert code_blocks_text(out) == ["<div>x</div>\nif a < b: pass\n", "echo '<b>'\n"]


@pytest.mark.parametrize("code", ["x = '<b>'\n" * 8000, "var s = " + "'\\" * 30_000 + "\n"],
                         ids=["big block", "long line"])
def test_code_limits_fall_back_to_plain_escape(code):
    """Pygments lexers can be quadratic in a line's length: big blocks are not highlighted."""
    out = render_html(f"```js\n{code}```")
    assert "<span" not in out and code_blocks_text(out) == [code]
    assert "<span" in render_html(f"```js\n{code[:200]}\n```")


def test_math_becomes_mathml():
    out = render_html("Euler $e^{i\\pi}+1=0$, \\(a<b\\) and\n\n$$\n\\frac{1}{2}\n$$\n\n\\[x^2\\]")
    assert out.count("<math") == 4 and 'display="block"' in out
    assert "<mfrac>" in out and "<mo>&lt;</mo>" in out
    assert html_problems(out) == []


@pytest.mark.parametrize("text", ["It costs $5 and $6.", "between $ 1 and 2 $", "US$5, $10", "a $ b"])
def test_prices_are_not_math(text):
    out = render_html(text)
    assert "<math" not in out and html.unescape(out) == f"<p>{text}</p>\n"


def test_math_that_cannot_convert_stays_text():
    out = render_html("$\\text{<b>}$ and $\\frac{$")
    assert "<math" not in out.split("and")[0]
    assert '<span class="um-math-source">$\\text{&lt;b&gt;}$</span>' in out


def test_math_not_inside_code():
    assert "<math" not in render_html("`$x$` and\n\n```\n$$y$$\n```")


def test_table_and_alignment():
    out = render_html("| a | b | c |\n|:--|:-:|--:|\n| 1 | 2 | 3 |")
    assert "<table>" in out and '<th class="um-align-left">a</th>' in out
    assert '<td class="um-align-center">2</td>' in out and '<td class="um-align-right">3</td>' in out
    assert "style" not in out


def test_normal_markdown():
    out = render_html("# T\n\n**b** *e* ~~d~~\n\n- one\n- two\n\n3. three\n\n> q\n\n---\n\nline  \nbreak")
    for piece in ('<h4 class="um-h jp-toc-ignore tocSkip">T</h4>', "<strong>b</strong>", "<em>e</em>", "<s>d</s>", "<li>one</li>",
                  '<ol start="3">', "<blockquote>", "<hr>", "<br>"):
        assert piece in out


def test_crlf_and_nul():
    assert render_html("a\r\nb\x00") == "<p>a\nb\ufffd</p>\n"


def test_empty():
    assert render_html("") == "" and AnswerRenderer().render("") == "" and export_markdown_text("") == ""


# ---------------------------------------------------------------- deep nesting, huge lines

DEEP_LIST = "\n".join("  " * i + f"- level{i}" for i in range(300))
DEEP_QUOTE = ">" * 300 + " deep quote"
DEEP_EMPHASIS = "*" * 3000 + "deep" + "*" * 3000


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_QUOTE, DEEP_EMPHASIS], ids=["list", "quote", "emphasis"])
def test_deep_nesting_keeps_all_text(deep):
    out = render_html(deep + "\n\nafter the deep part\n\n```html\n<script>x</script>\n```\n")
    assert "after the deep part" in out
    assert "level299" in out or "deep quote" in out or "deep" in out
    assert code_blocks_text(out)[-1] == "<script>x</script>\n"
    assert html_problems(out) == []


@pytest.mark.parametrize("line", ["x" * 300_000, "<a " * 100_000, "$a " * 100_000, "`a " * 100_000,
                                  "[a](javascript:x)" * 20_000, "\\(" * 100_000])
def test_huge_line_completes_without_losing_text(line):
    out = render_html(line + "\n\nafter")
    assert out.endswith("<p>after</p>\n")
    assert html_problems(out) == []


def test_streaming_view_reparses_only_the_unfinished_end():
    """Not a timing test: each render of a growing answer parses a bounded tail."""
    block = "Para <b> `c<d>` $x$\n\n```py\nx = '<s>'\n```\n\n| a |\n|---|\n| 1 |\n\n"
    doc = block * 500
    view = AnswerRenderer()
    reparsed = []
    for i in range(len(block), len(doc) + 1, len(block) * 7 + 3):
        out = view.render(doc[:i])
        reparsed.append(view.reparsed_chars)
    assert out == render_html(doc[: i])
    assert max(reparsed[1:]) < len(block) * 9  # not the whole growing text


def test_streaming_view_restarts_for_a_different_answer():
    view = AnswerRenderer()
    view.render("Intro\n\nPara one\n\nPara two")
    assert view.render("Other\n\nthing") == render_html("Other\n\nthing")


def test_split_freezes_finished_blocks_and_says_when_to_start_over():
    view = AnswerRenderer()
    assert view.split("One\n\nTwo") == ("<p>One</p>\n", "<p>Two</p>\n", False)
    frozen, tail, reset = view.split("One\n\nTwo\n\nThree")
    assert (frozen, tail, reset) == ("<p>One</p>\n<p>Two</p>\n", "<p>Three</p>\n", False)
    assert view.frozen_chars == len("One\n\nTwo\n\n")
    assert view.split("Other") == ("", "<p>Other</p>\n", True)  # not an extension: replace
    # A link reference definition changes links before it: everything is the tail again.
    text, view = "See [r].\n\nMore\n\n[r]: https://x.org\n\nEnd", AnswerRenderer()
    assert view.split(text[:14]) == ("<p>See [r].</p>\n", "<p>More</p>\n", False)
    assert view.split(text) == ("", render_html(text), True)


# ---------------------------------------------------------------- other API


def test_render_text_html_escapes_everything():
    assert render_text_html("<b>x</b> & y") == '<pre class="um-text">&lt;b&gt;x&lt;/b&gt; &amp; y</pre>'
    assert render_text_html("\nfirst line kept") == '<pre class="um-text">\n\nfirst line kept</pre>'
    assert html_problems(render_text_html("<script>alert(1)</script>")) == []


def test_is_unsafe_url_is_an_allow_list():
    for bad in ["javascript:x", " JAVASCRIPT:x", "java\nscript:x", "jav&#x61;script:x", "javascript&colon;x",
                "vbscript:x", "file:///etc", "data:image/png;base64,AA", "\u00a0https://x", "/path", "#frag",
                "./javascript:x", "", "\x01javascript:x", "ht\u200btps://x"]:
        assert is_unsafe_url(bad), bad
    for good in ["https://x", "HTTP://x", "mailto:a@b"]:
        assert not is_unsafe_url(good), good


def test_css_is_scoped_and_themed():
    rules = re.sub(r"\{[^}]*\}", "{}", CSS)
    selectors = [s.strip() for block in rules.split("{}") for s in block.split(",") if s.strip()]
    assert selectors and all(s.startswith(".um-answer") for s in selectors), selectors
    assert "var(--jp-border-color1, #ccc)" in CSS and "var(--jp-mirror-editor-keyword-color" in CSS
    assert "overflow-x: auto" in CSS


def test_pygments_classes_cover_current_pygments():
    from pygments.token import STANDARD_TYPES

    assert {c for c in STANDARD_TYPES.values() if c} <= PYGMENTS_CLASSES


# ---------------------------------------------------------------- export


def test_export_escapes_raw_html_outside_code_and_keeps_code():
    text = "Hi <b>x</b> `a<b>` and a < b\n\n```python\nprint('<b>')\n```\n\n[x](javascript:alert(1)) [y](https://y.org)"
    assert export_markdown_text(text) == (
        "Hi &lt;b>x&lt;/b> `a<\u2060b>` and a < b\n\n```python\nprint('<b>')\n```\n\n"
        "[x](#) [y](https://y.org)"
    )


def test_export_fence_is_longer_than_any_backtick_run():
    out = export_markdown_text("~~~js\nlet s = `a ``` b`;\n~~~\n")
    assert out == "````js\nlet s = `a ``` b`;\n````\n"


def test_export_hoists_nested_code_and_cleans_language():
    out = export_markdown_text('1. run:\n\n   ```sh"><img src=x>\n   echo <b>\n   ```\n2. done <i>')
    assert out == "1. run:\n\n```shimg\necho <b>\n```\n\n2. done &lt;i>"
    assert out.endswith("2. done &lt;i>")
    assert viewer_problems(out) == []


def test_export_neutralises_every_link_of_a_run():
    out = export_markdown_text("[a](javascript:x)[b](\u00a0javascript:y) [c](https://ok)\n\n[r]: vbscript:z")
    assert out == "[a](#)[b](#) [c](https://ok)\n\n[r]: #"


@pytest.mark.parametrize("tex", [r"\(\color{red}\colorbox{red}{SESSION EXPIRED}\)", r"$\color{red}{RED}$",
                                 r"$\textcolor{red}{x}$", r"$\fcolorbox{red}{blue}{x}$", r"$\style{background:red}{x}$",
                                 r"$$\mathcolor{red}{x}$$"])
def test_math_cannot_paint(tex):
    """A server must not paint coloured text or boxes into the notebook through math."""
    out = render_html(tex)
    assert "<math" in out
    # The only inline style anywhere is ours: the MathML wrapper hidden for style-less views (issue 17).
    assert set(re.findall(r'style="[^"]*"', out)) <= {'style="display:none"'}, out
    math = out[out.index("<math"):out.index("</math>")]
    for attr in ("mathcolor", "mathbackground", "color", "style", "background"):
        assert attr + "=" not in math, (attr, out)
