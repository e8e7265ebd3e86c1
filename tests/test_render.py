"""Hostile answers come out harmless; normal Markdown, code and math keep working."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from upstage_magic import render
from upstage_magic.render import is_unsafe_url, safe_html, safe_markdown

HOSTILE = [
    "<script>window.pwned=1</script>",
    '<img src=x onerror="window.pwned=1">',
    "<IMG SRC=x OnError=alert(1)>",
    "[x](javascript:window.pwned=1)",
    "[x](JaVaScRiPt:window.pwned=1)",
    "[x](jav&#x61;script:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x](java&#9;script:alert(1))",
    "[x](javascript\\:alert(1))",
    "[x](<javascript:alert(1)>)",
    "[x](<java\tscript:alert(1)>)",
    "[x]( \n javascript:alert(1))",
    "![x](javascript:alert(1))",
    "[x](vbscript:msgbox(1))",
    "[x](file:///etc/passwd)",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml;base64,PHN2Zz4=)",
    "[x][r]\n\n[r]: javascript:alert(1)",
    "[x][r]\n\n[r]:\n  JAVASCRIPT:alert(1) 'title'",
    "<javascript:alert(1)>",
    "<iframe src=https://evil.example></iframe>",
    '<iframe srcdoc="<script>parent.pwned=1</script>"></iframe>',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<details open ontoggle=alert(1)>",
    '<a href="javascript:alert(1)">raw</a>',
    "<!-- x --><img src=x onerror=alert(1)>",
    "<!--\n<img src=x onerror=alert(1)>\n-->",
    "<!-- c -->\n    <img src=x onerror=alert(1)>",
    "<div>\n\n<img src=x onerror=alert(1)>\n\n</div>",
    "<style>@import 'x'</style>",
    "<</script>script>alert(1)<</script>/script>",
    "<scr<script>ipt>alert(1)</script>",
    "text <b onmouseover=alert(1)>bold</b>",
    "> <img src=x onerror=alert(1)>",
    "- <img src=x onerror=alert(1)>",
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | `<x>` |",
    "# <img src=x onerror=alert(1)>",
    "<?php echo 1; ?>",
    "<![CDATA[<img src=x onerror=alert(1)>]]>",
    "</div><img src=x onerror=alert(1)>",
    # marked's GFM URL autolink eats backticks, so a "code span" after a URL is not code there
    "https://example.com/`<img/src=x/onerror=alert(1)>`",
    "`<img src=x onerror=alert(1)>`",
    "``<svg/onload=alert(1)>``",
    "$<img src=x onerror=alert(1)>$",
    "$$\n<img src=x onerror=alert(1)>\n$$",
    "\\(<img src=x onerror=alert(1)>\\)",
    "[a](https://x.com \"<img src=x onerror=alert(1)>\")",
    "<https://x.com/tabindex=1/autofocus/onfocus=alert(1)>",
]

TAG_START = re.compile(r"<[A-Za-z/!?]")


def unsafe_tag_outside_code_blocks(md_text: str) -> list[str]:
    """Every `<` that could open a tag in the rendered HTML, outside fenced/indented code.

    Code blocks are found by CommonMark parsing of the *output* with raw HTML on.
    """
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    lines = md_text.split("\n")
    code = set()
    for tok in md.parse(md_text):
        if tok.type in ("fence", "code_block") and tok.map:
            code.update(range(*tok.map))
    return [ln for i, ln in enumerate(lines) if i not in code and TAG_START.search(ln)]


def unsafe_links(md_text: str) -> list[str]:
    """Destinations of links/images an HTML renderer would produce from the Markdown."""
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # see everything, as marked would
    found = []
    html = md.render(md_text)
    for m in re.finditer(r'(?:href|src)="([^"]*)"', html):
        import html as h

        if is_unsafe_url(h.unescape(m.group(1))):
            found.append(m.group(1))
    return found


@pytest.mark.parametrize("answer", HOSTILE)
def test_safe_markdown_hostile(answer):
    out = safe_markdown(answer)
    assert unsafe_tag_outside_code_blocks(out) == []
    assert unsafe_links(out) == []
    # no `<` that could open a tag anywhere outside code blocks, also inside "code spans"
    assert not TAG_START.search(out)


def test_script_becomes_visible_text():
    out = safe_markdown("<script>window.pwned=1</script>")
    assert out == "&lt;script>window.pwned=1&lt;/script>"
    # CommonMark renders the entity as a literal "<"
    assert "&lt;script&gt;" in MarkdownIt("commonmark", {"html": True}).render(out)


def test_unsafe_link_dropped_text_kept():
    assert safe_markdown("see [x](javascript:window.pwned=1) now") == "see [x](#) now"
    assert safe_markdown("[x](javascript:alert(1) \"t\")") == '[x](# "t")'
    assert safe_markdown("[r]: javascript:alert(1)") == "[r]: #"


def test_safe_links_kept():
    for src in ["[x](https://upstage.ai/docs?a=1&b=(2))", "![i](https://x.org/a.png \"t\")",
                "[m](mailto:a@b.c)", "[rel](../docs/x.md)", "![d](data:image/png;base64,iVBORw0K)",
                "[r][1]\n\n[1]: https://x.org"]:
        assert safe_markdown(src) == src


def test_autolinks_shown_as_text():
    assert safe_markdown("<https://upstage.ai>") == "&lt;https://upstage.ai&gt;"
    assert safe_markdown("<javascript:alert(1)>") == "&lt;javascript:alert(1)&gt;"


CODE_BLOCK = "```html\n<script>alert('x')</script>\n<img src=x onerror=alert(1)>\n```"


def test_fenced_code_byte_exact():
    text = f"Here:\n\n{CODE_BLOCK}\n\nand <b>bold</b>"
    out = safe_markdown(text)
    assert CODE_BLOCK in out
    assert out.endswith("and &lt;b>bold&lt;/b>")


def test_fenced_code_in_list_byte_exact():
    block = "   ```python\n   print('<b>' if a < b else \"</b>\")\n   ```"
    text = f"1. Run:\n\n{block}\n2. <i>done</i>"
    out = safe_markdown(text)
    assert block in out
    assert "&lt;i>done&lt;/i>" in out


def test_tilde_fence_and_unterminated_fence_byte_exact():
    text = "~~~\n<a href=x>\n~~~\n<b>\n\n```js\nlet a = '<img src=x>';\n"
    out = safe_markdown(text)
    assert out == "~~~\n<a href=x>\n~~~\n&lt;b>\n\n```js\nlet a = '<img src=x>';\n"


def test_fence_swallowed_by_html_block_is_escaped():
    # CommonMark: the fence lines belong to the HTML block that "<b>" opened, so they are
    # escaped like it (a cosmetic loss, never a raw tag).
    out = safe_markdown("<b>\n```js\nlet a = '<img src=x>';\n```")
    # (the ``` pair reads as a code span inside that paragraph: invisible U+2060 after "<")
    assert out == "&lt;b>\n```js\nlet a = '<\u2060img src=x>';\n```"
    assert not TAG_START.search(out)


def test_indented_code_byte_exact():
    text = "Para <b>\n\n    <div>x</div>\n    if a < b: pass\n\nafter"
    assert safe_markdown(text) == "Para &lt;b>\n\n    <div>x</div>\n    if a < b: pass\n\nafter"


def test_indented_code_after_escaped_html_is_not_trusted():
    # markdown-it: html block then code block; once the comment is escaped a renderer
    # sees one paragraph, so the "code" must be escaped too.
    out = safe_markdown("<!-- c -->\n    <img src=x onerror=alert(1)>")
    assert out == "&lt;!-- c -->\n    &lt;img src=x onerror=alert(1)>"


def test_html_inside_code_block_escaped_in_html_output():
    out = safe_html(CODE_BLOCK)
    assert "&lt;script&gt;alert(" in out and "<script" not in out


def test_inline_code_looks_the_same():
    out = safe_markdown("Use `List<int>` and `a < b` and `</div>`.")
    assert out == "Use `List<\u2060int>` and `a < b` and `<\u2060/div>`."
    rendered = MarkdownIt("commonmark").render(out).replace("\u2060", "")
    assert "<code>List&lt;int&gt;</code>" in rendered and "<code>&lt;/div&gt;</code>" in rendered


def test_inline_code_without_tags_byte_exact():
    text = "Call `f(x)` with `a<1` and ``a ` b`` here <b>."
    assert safe_markdown(text) == "Call `f(x)` with `a<1` and ``a ` b`` here &lt;b>."


def test_escaped_backtick_does_not_open_code():
    assert safe_markdown("\\`<b>`") == "\\`&lt;b>`"


def test_math_untouched_or_lt():
    # a `<` that cannot start a tag stays as it is
    text = "Euler: $e^{i\\pi}+1=0$ and $$\\sum_{i<1} i$$ and $a < b$"
    assert safe_markdown(text) == text
    assert safe_markdown("$$\\sum_{i<n} i$$") == "$$\\sum_{i\\lt n} i$$"
    assert safe_markdown("$x<y$ and <b>") == "$x\\lt y$ and &lt;b>"
    assert safe_markdown("$$\na<b\n$$") == "$$\na\\lt b\n$$"


def test_normal_markdown_unchanged():
    text = (
        "# Title\n\nSome **bold**, *em*, ~~del~~ and [a link](https://upstage.ai).\n\n"
        "- one\n- two\n  1. nested\n\n> quote\n\n| a | b |\n|---|:-:|\n| 1 | 2 |\n\n---\n\n"
        "```python\nprint('hi')\n```\n"
    )
    assert safe_markdown(text) == text
    html = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(safe_markdown(text))
    for tag in ("<h1>", "<strong>", "<em>", "<s>", '<a href="https://upstage.ai">', "<li>", "<blockquote>",
                "<table>", "<hr />", '<code class="language-python">'):
        assert tag in html


def test_blockquote_and_gt_kept():
    assert safe_markdown("> quoted <b>\n> more") == "> quoted &lt;b>\n> more"
    assert safe_markdown("a > b and a->b") == "a > b and a->b"


def test_crlf_normalised():
    assert safe_markdown("a <b>\r\nc\rd") == "a &lt;b>\nc\nd"


def test_empty():
    assert safe_markdown("") == "" and safe_html("") == ""


def test_streaming_prefixes_equal_fresh_render():
    """The prefix cache never changes the result."""
    doc = (
        "# T <b>\n\nIntro `x<y>` and $a<b$\n\n```html\n<div>\n\n<p>x</p>\n```\n\n- a <i>\n\n"
        "      <pre>code in list</pre>\n\n    <top>code</top>\n\n<!-- c -->\n    <img src=x>\n\n"
        "[z](javascript:alert(1)) end\n"
    ) * 3
    render._PREFIX_CACHE.clear()
    fresh = [render._render(doc[:i].replace("\r", ""))[0] for i in range(0, len(doc) + 1, 7)]
    render._PREFIX_CACHE.clear()
    streamed = [safe_markdown(doc[:i]) for i in range(0, len(doc) + 1, 7)]
    assert streamed == fresh
    assert render._PREFIX_CACHE  # the cache was used


def test_long_answer_is_fast_enough_when_streamed():
    """Not a timing test: repeated renders of a growing text reuse the finished blocks."""
    calls = []
    real = render._render

    def spy(text):
        calls.append(len(text))
        return real(text)

    block = "Para <b> `c<d>`\n\n```py\nx = '<s>'\n```\n\n"
    doc = block * 2000
    render._PREFIX_CACHE.clear()
    try:
        render._render = spy
        for i in range(len(block), len(doc) + 1, len(block) * 50):
            safe_markdown(doc[:i])
    finally:
        render._render = real
    # each call re-renders only the tail, not the whole growing text
    assert max(calls[1:]) < len(block) * 60


# ---------------------------------------------------------------- safe_html

ALLOWED_TAGS = {
    "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "code", "pre", "em", "strong", "a",
    "blockquote", "table", "thead", "tbody", "tr", "th", "td", "hr", "br", "del", "s", "img",
}
ALLOWED_ATTRS = {"a": {"href", "title", "target", "rel"}, "img": {"src", "alt", "title"},
                 "code": {"class"}, "ol": {"start"}, "th": {"style"}, "td": {"style"}}


class TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_comment(self, data):
        self.comments.append(data)

    def handle_decl(self, decl):
        self.comments.append(decl)

    def handle_pi(self, data):
        self.comments.append(data)

    def unknown_decl(self, data):
        self.comments.append(data)


def html_problems(out: str) -> list[str]:
    p = TagCollector()
    p.feed(out)
    p.close()
    problems = [f"comment/decl {c!r}" for c in p.comments]
    for tag, attrs in p.tags:
        if tag not in ALLOWED_TAGS:
            problems.append(f"tag {tag}")
        for name, value in attrs:
            if name.startswith("on") or name not in ALLOWED_ATTRS.get(tag, set()):
                problems.append(f"attr {tag}.{name}")
            if name in ("href", "src") and value is not None and is_unsafe_url(value):
                problems.append(f"url {value!r}")
        if tag == "a":
            d = dict(attrs)
            if d.get("href") and (d.get("rel") != "noopener noreferrer" or d.get("target") != "_blank"):
                problems.append("link without rel/target")
    return problems


@pytest.mark.parametrize("answer", HOSTILE)
def test_safe_html_hostile(answer):
    assert html_problems(safe_html(answer)) == []


def test_safe_html_formatting():
    out = safe_html("# T\n\n**b** [l](https://upstage.ai) `<x>`\n\n| a |\n|---|\n| 1 |\n\n~~d~~")
    assert "<h1>T</h1>" in out and "<strong>b</strong>" in out
    assert '<a href="https://upstage.ai" target="_blank" rel="noopener noreferrer">l</a>' in out
    assert "<code>&lt;x&gt;</code>" in out and "<table>" in out and "<s>d</s>" in out
    assert html_problems(out) == []


def test_safe_html_unsafe_link_not_linked():
    out = safe_html("[x](javascript:alert(1)) ![i](data:text/html,x) [y](JAVA&#x53;cript:x)")
    assert "<a" not in out and "<img" not in out
    assert safe_html("![ok](data:image/png;base64,AA)").startswith('<p><img src="data:image/png;base64,AA"')


def test_safe_html_no_linkify():
    assert "<a" not in safe_html("see https://upstage.ai and www.example.com")


def test_is_unsafe_url():
    for bad in ["javascript:x", " JAVASCRIPT:x", "java\nscript:x", "jav&#x61;script:x", "&#x6A;avascript:x",
                "javascript&colon;x", "vbscript:x", "file:///etc", "data:text/html,x", "data:image/svg+xml,x",
                "\x01javascript:x", "java\\script:x".replace("\\s", "s")]:
        assert is_unsafe_url(bad), bad
    for good in ["https://x", "http://x", "mailto:a@b", "/path", "#frag", "data:image/png;base64,AA",
                 "DATA:IMAGE/JPEG;base64,AA", "javascript", "./javascript:x"]:
        assert not is_unsafe_url(good), good


# ---------------------------------------------------------------- fuzzing

FRAGMENTS = st.sampled_from([
    "<", ">", "<script>", "</script>", "<img src=x onerror=alert(1)>", "<svg/onload=alert(1)>", "<!--", "-->",
    "<a href='javascript:x'>", "</a>", "<?", "<!x", "<![CDATA[", "]]>", "`", "``", "```", "~~~", "```html",
    "\n", "\n\n", "    ", "  ", "\t", "> ", "- ", "1. ", "# ", "|", "|---|", "$", "$$", "\\(", "\\)", "\\[", "\\]",
    "\\", "[", "]", "(", ")", "](", "]:", "javascript:", "JaVa&#x53;cript:", "data:", "https://x.com",
    "<https://x.com>", "<javascript:alert(1)>", "*", "_", "&lt;", "&", "x", "abc", " ", "é", "😀", "\r\n",
])
markdownish = st.lists(FRAGMENTS, max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(markdownish, st.text(max_size=200)))
def test_fuzz_safe_markdown_no_raw_tag(text):
    out = safe_markdown(text)
    assert unsafe_tag_outside_code_blocks(out) == []
    assert unsafe_links(out) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=st.lists(markdownish, min_size=1, max_size=5))
def test_fuzz_streaming_equals_fresh(parts):
    render._PREFIX_CACHE.clear()
    text = ""
    for p in parts:
        text += p
        norm = text.replace("\r\n", "\n").replace("\r", "\n")
        assert safe_markdown(text) == render._render(norm)[0]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(markdownish, st.text(max_size=200)))
def test_fuzz_safe_html_allow_list(text):
    assert html_problems(safe_html(text)) == []


# -- deep nesting (markdown-it stops at 20 levels and used to drop the rest) ----------------

DEEP_LIST = "\n".join("  " * i + f"- level{i}" for i in range(60))
DEEP_QUOTE = "".join(">" for _ in range(60)) + " deep quote"


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_QUOTE], ids=["list", "quote"])
def test_text_after_deep_nesting_is_kept_in_html(deep):
    out = safe_html(deep + "\n\nafter the deep part")
    assert "after the deep part" in out
    assert "level59" in out or "deep quote" in out


@pytest.mark.parametrize("deep", [DEEP_LIST, DEEP_QUOTE], ids=["list", "quote"])
def test_code_after_deep_nesting_stays_byte_exact(deep):
    code = '```html\n<script>alert("kept as code")</script>\n```'
    out = safe_markdown(deep + "\n\n" + code + "\n")
    assert code in out
