"""Property tests: whatever the model writes, the renderer emits only allow-listed HTML.

The audit parses the output with a real HTML parser and checks every tag, attribute,
class and URL against lists written here, independently of render.py's own lists.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upstage_magic.render import AnswerRenderer, export_markdown_text, render_html

# ---------------------------------------------------------------------------- the audit

HTML_TAGS = {  # no h1-h3: an answer's headings sit below the notebook's own (h4-h6)
    "p", "br", "hr", "h4", "h5", "h6", "strong", "em", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
}
MATHML_TAGS = {
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup", "mfrac",
    "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd", "mstyle", "mpadded",
    "mphantom", "menclose", "merror",
}
ATTRS = {
    "a": {"href", "title", "target", "rel", "class"},
    "img": {"src", "alt", "title"},
    "ol": {"start"},
    "pre": {"class"}, "span": {"class", "style"}, "th": {"class"}, "td": {"class"}, "code": {"class"},
    "h4": {"class"}, "h5": {"class"}, "h6": {"class"},
    "math": {"display"},
    "mo": {"stretchy", "fence", "separator", "form", "accent", "largeop", "movablelimits", "symmetric",
           "minsize", "maxsize", "lspace", "rspace"},
    "mover": {"accent"}, "munder": {"accentunder"}, "munderover": {"accent", "accentunder"},
    "mfrac": {"linethickness"}, "mstyle": {"displaystyle", "scriptlevel"},
    "mspace": {"width", "height", "depth"}, "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "mtable": {"columnalign", "rowalign", "columnlines", "rowlines", "columnspacing", "rowspacing", "frame"},
    "mtd": {"columnalign", "rowalign", "columnspan", "rowspan"}, "menclose": {"notation"},
}
PYGMENTS_SHORT = re.compile(r"[a-z][a-z0-9]{0,2}")  # k, s2, cpf, ges ...
CLASSES = {
    "pre": {"um-code", "um-text"},
    "a": {"um-image-link"},
    "th": {"um-align-left", "um-align-center", "um-align-right"},
    "td": {"um-align-left", "um-align-center", "um-align-right"},
    "span": {"um-image-link", "um-math-source", "um-math", "um-math-display", "um-mathml"},
    "code": {"um-tex"},
    **{h: {"um-h", "jp-toc-ignore", "tocSkip"} for h in ("h4", "h5", "h6")},
}
URL = re.compile(r"(?:https?|mailto):", re.IGNORECASE)
IMG_URL = re.compile(r"https?:", re.IGNORECASE)


class Audit(HTMLParser):
    """Collect every problem in an HTML fragment."""

    def __init__(self, *, load_images: bool) -> None:
        super().__init__(convert_charrefs=True)
        self.load_images = load_images
        self.problems: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        allowed = HTML_TAGS | MATHML_TAGS | ({"img"} if self.load_images else set())
        if tag not in allowed:
            self.problems.append(f"tag <{tag}>")
        names = [n for n, _ in attrs]
        if len(names) != len(set(names)):
            self.problems.append(f"duplicate attribute on <{tag}>")
        d = dict(attrs)
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") or name == "id" or name not in ATTRS.get(tag, set()):
                self.problems.append(f"attribute {name} on <{tag}>")
            if name == "style" and (tag != "span" or value != "display:none"):  # the hidden MathML only
                self.problems.append(f"style {value!r} on <{tag}>")
            if name == "href" and not URL.match(value):
                self.problems.append(f"href {value!r}")
            if name == "src" and not IMG_URL.match(value):
                self.problems.append(f"src {value!r}")
            if name == "class":
                for cls in value.split():
                    ok = cls in CLASSES.get(tag, set()) or (tag == "span" and PYGMENTS_SHORT.fullmatch(cls))
                    if not ok or cls.startswith("language-") or cls == "mermaid":
                        self.problems.append(f"class {cls!r} on <{tag}>")
        if tag == "a" and "href" in d and (d.get("rel") != "noopener noreferrer" or d.get("target") != "_blank"):
            self.problems.append(f"link without rel/target: {attrs}")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"declaration {decl!r}")

    def handle_pi(self, data: str) -> None:
        self.problems.append(f"processing instruction {data!r}")

    def unknown_decl(self, data: str) -> None:
        self.problems.append(f"declaration {data!r}")


def html_problems(out: str, *, load_images: bool = False) -> list[str]:
    """Everything in ``out`` outside the allow-lists (empty list: clean)."""
    audit = Audit(load_images=load_images)
    audit.feed(out)
    audit.close()
    if re.search(r"<\s*/?\s*(script|style|iframe|svg|object|embed|form|textarea)\b", out, re.IGNORECASE):
        audit.problems.append("dangerous tag text")
    return audit.problems


def prefixes(text: str, limit: int = 40) -> list[str]:
    """Every prefix of a short text, an even sample of a long one (always the whole text)."""
    n = len(text)
    if n <= limit:
        return [text[:i] for i in range(n + 1)]
    return [text[: n * k // limit] for k in range(limit + 1)]


# ---------------------------------------------------------------------------- strategies

FRAGMENTS = [
    # fences, mixed and odd
    "```", "~~~", "````", "```~~~", "~~~`", "``` ~~~", "```python", "~~~js", "```mermaid", "```html",
    '```"><img src=x onerror=alert(1)>', "``` class=x onmouseover=alert(1)", "```language-x mermaid",
    # whitespace of every kind
    "\n", "\n\n", "\t", "\t\n", "    ", "  ", " ", "\u00a0", "\ufeff", "\u2028", "\u2029", "\u200b",
    "\u3000", "\x0b", "\x0c", "\x00", "\r\n", "\r",
    # raw HTML
    "<", ">", "<script>", "</script>", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>", "<svg/onload=alert(1)>", "<a href=javascript:alert(1)>x</a>", "</a>", "<!--",
    "-->", "<?", "<!x", "<![CDATA[", "]]>", "<iframe srcdoc=x>", "<style>", "<b onclick=alert(1)>",
    '<math><mtext><img src=x onerror=alert(1)>', "</code></pre><script>alert(1)</script>", "<div>", "</p>",
    # links and images
    "[a](javascript:alert(1))", "[b](javascript:alert(2))", "[a](javascript:alert(1))[b](javascript:alert(2))",
    "[c](\u00a0javascript:alert(1))", "[d](\ufeffjavascript:x)", "[e](\u2028javascript:x)",
    "[f](java\tscript:x)", "[g](JaVa&#x53;cript:x)", "[h](&#106;avascript:x)", "[i](javascript&colon;x)",
    "[j](<javascript:x>)", "[k](vbscript:x)", "[l](data:text/html,<script>x</script>)", "[m](file:///etc)",
    "[n](https://upstage.ai)", "[o](mailto:a@b.c)", "[p](/relative)", "[q](#frag)",
    "![i](https://x.org/p.png)", "![i](javascript:alert(1))", "![x](data:image/svg+xml,<svg onload=alert(1)>)",
    "[![i](https://e.x/a.png)](javascript:x)", "[![i](javascript:x)](https://e.x)", "<javascript:alert(1)>",
    "<https://x.org>", "[r]", "[r]: javascript:alert(1)", "[r]: https://x.org", "[", "]", "(", ")", "](", "]:",
    "javascript:", "https://", "www.x.org",
    # math
    "$", "$$", "\\(", "\\)", "\\[", "\\]", "$x^2$", "$5 and $6", "\\frac{a}{b}", "\\text{<img src=x onerror=alert(1)>}",
    "\\href{javascript:alert(1)}{x}", "\\style{color:red}{x}", "\\class{mermaid}{x}", "\\mathrm{x}", "{", "}",
    # entities and escapes
    "&#106;", "&colon;", "&lt;", "&amp;", "&#x0A;", "&", "\\", "\\<", "\\`",
    # Markdown structure
    "> ", "- ", "* ", "1. ", "2) ", "# ", "|", "|---|", "| a | b |", "|:-:|--:|", "---", "***", "===",
    "`", "``", "*", "_", "~~", "x", "abc", "é", "😀",
]
markdownish = st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)
any_text = st.one_of(
    markdownish,
    st.text(alphabet=st.sampled_from(list("<>`~$\\[]()!:*_#|-&; \t\n\u00a0ajsx0")), max_size=80),
    st.text(max_size=60),
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(text=any_text)
def test_every_prefix_renders_only_allow_listed_html(text: str) -> None:
    for prefix in prefixes(text):
        out = render_html(prefix)
        assert html_problems(out) == [], (prefix, out)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
def test_with_images_allowed_only_http_images(text: str) -> None:
    out = render_html(text, load_images=True)
    assert html_problems(out, load_images=True) == [], (text, out)


# ---------------------------------------------------------------------------- code stays exact


class CodeText(HTMLParser):
    """Text content of every <pre> (what a reader of the page sees)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0
        self.blocks: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "pre":
            self.depth += 1
            self.blocks.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.blocks[-1] += data


def code_blocks_text(out: str) -> list[str]:
    p = CodeText()
    p.feed(out)
    p.close()
    return p.blocks


code_text = st.text(
    alphabet=st.one_of(st.sampled_from(list("<>&\"'`~$\\ \t\n{}()[];#*_")), st.characters(blacklist_categories=("Cs",))),
    max_size=120,
).map(lambda s: s.replace("\r", "").replace("\x00", ""))


@FAST
@given(code=code_text, lang=st.sampled_from(["", "python", "html", "js", "c++", "bash", "mermaid", "x<y>", "diff"]))
def test_code_block_text_is_byte_exact(code: str, lang: str) -> None:
    longest = max((len(m) for m in re.findall("`+", code)), default=0)
    fence = "`" * max(3, longest + 1)
    body = code if code.endswith("\n") or not code else code + "\n"
    out = render_html(f"{fence}{lang}\n{body}{fence}\n")
    assert code_blocks_text(out) == [body]
    assert html_problems(out) == []


# ---------------------------------------------------------------------------- streaming cache

BLOCKS = st.sampled_from([
    "Para with *em* and `code` and $x$.", "1. one\n2. two", "- a\n- b", "  - nested", "3. three", "- c",
    "> quote\n> more", "```python\nx = '<b>'\n\ny = 1\n```", "```\nunclosed", "    indented code",
    "| a | b |\n|---|--:|\n| 1 | 2 |", "$$\n\\frac{1}{2}\n$$", "# Head", "Setext\n===", "---", "text\n---",
    "[r]: https://x.org", "see [r] and [s]", "[s]: javascript:alert(1)", "<b>raw</b>", "[a](javascript:x) [b](https://b.c)",
    "![i](https://x.org/p.png)", "\\[\na\n\\]", "* star", "+ plus", "10) ten", "\t\ttabbed",
    "lazy\ncontinuation", "Title\n\n  indented para", "~~~\ntilde\n~~~", "",
])
answers = st.lists(st.tuples(BLOCKS, st.sampled_from(["\n", "\n\n", "\n\n\n", " \n\n", "\n \n", "\n\xa0\n"])),
                   max_size=8).map(lambda parts: "".join(b + sep for b, sep in parts))


def check_splits(view: AnswerRenderer, texts: list[str]) -> None:
    """Each split joins to a fresh render; frozen HTML only grows by appending unless reset."""
    held, last = "", ""
    for text in texts:
        frozen, tail, reset = view.split(text)
        assert frozen + tail == render_html(text), text
        assert reset or frozen.startswith(held), (last, text)
        extends = text.startswith(last)
        assert not reset or not extends or "]:" in text, (last, text)  # a reset needs a reason
        if "\r" not in text + last:  # (CR is read as a line end: "a\r" and "a\n" extend each other)
            assert reset or extends, (last, text)
        held, last = frozen, text


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=answers, step=st.integers(min_value=1, max_value=9))
def test_streamed_splits_join_to_a_fresh_render(text: str, step: int) -> None:
    view = AnswerRenderer()
    check_splits(view, [text[:i] for i in [*range(0, len(text), step), len(text)]])
    assert view.render(text) == render_html(text)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(answers, any_text), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_prefix_sequence_splits_into_append_only_frozen_html(text: str, cuts: list[int]) -> None:
    """Random cut points, also going back (a shorter text must reset, never keep stale blocks)."""
    check_splits(AnswerRenderer(), [text[: c % (len(text) + 1)] for c in cuts] + [text])


@pytest.mark.parametrize("space", ["\xa0", "\u2003", "\u3000", "\x0c", "\x0b", "\x85", " \xa0\t"])
def test_a_line_of_unicode_spaces_is_not_a_blank_line(space: str) -> None:
    """Only spaces and tabs make a line blank (CommonMark): a paragraph of other spaces goes on,
    and a "#" after it can still turn out a paragraph line instead of a heading. Found by the
    test above: a frozen empty paragraph for "\xa0\n#" stayed when it grew to "\xa0\n#000"."""
    check_splits(AnswerRenderer(), [f"{space}\n#", f"{space}\n#000", f"{space}\n#000\n\n# H\n\nmore"])
    check_splits(AnswerRenderer(), [f"para\n{space}\n", f"para\n{space}\n- item", f"para\n{space}\n- item\n\nend"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(answers, min_size=2, max_size=4))
def test_cached_view_given_unrelated_texts_equals_fresh_render(texts: list[str]) -> None:
    """A text that does not extend the previous one must not reuse its blocks."""
    view = AnswerRenderer()
    for text in texts:
        assert view.render(text) == render_html(text)
    check_splits(AnswerRenderer(), texts)


# ---------------------------------------------------------------------------- exports


def viewer_problems(md_text: str) -> list[str]:
    """Raw HTML or a bad link as two real Markdown viewers (markdown-it with HTML on, mistune) see it."""
    from markdown_it import MarkdownIt

    problems = []
    md = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    md.validateLink = lambda url: True  # see every link, as a lax viewer would
    tokens = md.parse(md_text)
    stack = list(tokens)
    while stack:
        tok = stack.pop()
        if tok.type in ("html_block", "html_inline"):
            problems.append(f"raw html {tok.content!r}")
        for name in ("href", "src"):
            url = tok.attrGet(name) if tok.attrs else None
            if url and _bad_scheme(str(url)):
                problems.append(f"{name} {url!r}")
        stack.extend(tok.children or [])
    try:
        import mistune
    except ImportError:  # pragma: no cover - nbconvert brings it
        return problems
    tags = TagList()
    tags.feed(str(mistune.html(md_text)))
    tags.close()
    for tag, attrs in tags.tags:
        if tag in ("script", "svg", "iframe", "style", "object", "embed", "math", "details", "b", "i", "div"):
            problems.append(f"mistune <{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                problems.append(f"mistune {name} on <{tag}>")
            if name in ("href", "src") and _bad_scheme(value or ""):
                problems.append(f"mistune {name} {value!r}")
    return problems


class TagList(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def _bad_scheme(url: str) -> bool:
    cleaned = re.sub(r"[\s\x00-\x1f\x7f\u00a0\u200b\u2028\u2029\ufeff]", "", html.unescape(url)).lower()
    m = re.match(r"([a-z][a-z0-9+.\-]*):", cleaned)
    return bool(m) and m.group(1) not in ("http", "https", "mailto")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=any_text)
def test_exported_markdown_has_no_raw_html_or_bad_link(text: str) -> None:
    out = export_markdown_text(text)
    assert viewer_problems(out) == [], (text, out)
