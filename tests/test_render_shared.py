"""Answers read correctly where our stylesheet is dropped (untrusted notebooks, sanitising viewers).

The reference is JupyterLab's own sanitiser (@jupyterlab/apputils ``Sanitizer``, sanitize-html):
it keeps ``h1-h6``, ``p``, ``pre``, ``code``, ``span``, ``small``, ``details``... and the
``class`` and ``style`` attributes (style only for listed properties, ``display`` among them),
drops ``<style>`` and every MathML tag (keeping their text). :func:`visible_text` applies
those rules and returns what a reader would see.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from upstage_magic.notebook.display import footer_bundle, html_bundle
from upstage_magic.render import render_html
from upstage_magic.render.sanitiser import sanitise

JLAB_TAGS = {"a", "b", "blockquote", "br", "code", "details", "div", "em", "h1", "h2", "h3", "h4", "h5", "h6",
             "hr", "i", "li", "ol", "p", "pre", "s", "small", "span", "strong", "sub", "summary", "sup", "table",
             "tbody", "td", "th", "thead", "tr", "ul"}
VOID = {"br", "hr", "img"}


class StyleLess(HTMLParser):
    """What is seen after JupyterLab's sanitiser, with no stylesheet: text, and the tags it sits in."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden)
        self.seen: list[tuple[str, tuple[str, ...]]] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "style":
            self.skip += 1
            return
        if tag not in JLAB_TAGS or tag in VOID:
            return  # the tag goes, its text stays
        hidden = "display:none" in (dict(attrs).get("style") or "").replace(" ", "")
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag):
        if tag == "style":
            self.skip -= 1
        elif tag in JLAB_TAGS and tag not in VOID and self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_data(self, data):
        if not self.skip and not any(h for _, h in self.stack):
            self.seen.append((data, tuple(t for t, _ in self.stack)))


def style_less(page: str) -> StyleLess:
    p = StyleLess()
    p.feed(page)
    p.close()
    return p


def visible_text(page: str) -> str:
    return "".join(t for t, _ in style_less(page).seen)


def test_headings_sit_below_the_notebooks_and_out_of_its_table_of_contents():
    out = render_html("# One\n\n## Two\n\n### Three\n\n#### Four")
    assert re.findall(r"<(h\d)", out) == ["h4", "h5", "h6", "h6"]  # unstyled: no larger than the notebook's H4
    assert out.count('class="um-h jp-toc-ignore tocSkip"') == 4  # JupyterLab's ToC skips these


def test_math_shows_its_tex_source_where_mathml_and_styles_are_dropped():
    page = html_bundle(render_html("Euler: $e^{i\\pi}+1=0$\n\n$$\\frac{1}{2}$$"), "")["text/html"]
    seen = visible_text(page)
    assert "$e^{i\\pi}+1=0$" in seen and "$$\\frac{1}{2}$$" in seen
    assert "eiπ" not in seen  # not MathML flattened into other meaning
    assert ("$e^{i\\pi}+1=0$", ("div", "p", "span", "code")) in style_less(page).seen  # as code
    # With our stylesheet the MathML shows (!important outranks the inline style) and the source hides.
    assert ".um-mathml { display: inline !important; }" in page and "code.um-tex { display: none; }" in page


def test_code_footer_and_thinking_keep_their_form_without_styles():
    from upstage_magic.notebook.display import thinking_html

    page = html_bundle(thinking_html("I think", done=True) + render_html("```python\nx = 1\n```"), "")["text/html"]
    assert "<details class=\"um-thinking\"><summary>" in page  # collapsed: no open attribute
    assert ("x", ("div", "pre", "code", "span")) in style_less(page).seen or \
        any(t.startswith("x") and "pre" in tags for t, tags in style_less(page).seen)
    footer = footer_bundle("solar-pro3 · 12 in / 30 out · 1.2 s")["text/html"]
    assert any("12 in" in t and "small" in tags for t, tags in style_less(footer).seen)


def test_the_only_inline_style_is_the_hidden_mathml():
    assert sanitise('<span style="display:none">a</span>') == '<span style="display:none">a</span>'
    for bad in ('<span style="color:red">a</span>', '<span style="display:none;background:url(x)">a</span>',
                '<p style="display:none">a</p>', '<span style="display:block">a</span>'):
        assert "style" not in sanitise(bad), bad
