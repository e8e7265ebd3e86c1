"""Model text -> sanitised HTML: the only place HTML is made from untrusted model output.

Model answers are untrusted (prompt injection can put anything in them) and a live notebook
output is trusted by JupyterLab, so nothing downstream protects the page. One pipeline,
never Markdown for a front end to parse again:

    text -> markdown-it-py (CommonMark + tables + strikethrough, raw HTML off, our rules for
            links, images, code and math) -> HTML -> nh3 (ammonia) allow-list -> page

- Tags, attributes and classes come from the short allow-lists in ``sanitiser`` (no ``style``, no
  ``on*``, no ``id``; classes only from Pygments' short token names and our ``um-*`` names,
  so never ``language-*`` or ``mermaid``, which front ends and nbconvert act on).
- A link keeps its ``href`` only if its scheme is http, https or mailto, decided after
  decoding entities and backslash escapes and removing every whitespace, control and
  format character (``\\u00a0``, ``\\ufeff``, ``\\u2028``, ``\\u200b`` ...); nh3 checks
  again with a real URL parser and drops relative URLs (an answer has no base). Every link
  gets ``target="_blank" rel="noopener noreferrer"``.
- Code blocks are escaped and highlighted here with Pygments; the language tag only picks
  a lexer. Math becomes MathML (latex2mathml) or stays escaped text.
- Remote images are not fetched unless ``load_images=True``; otherwise they show as a
  link "image: alt (host)".

Pure (modules: sanitiser, rules, code, mathml, stream, export, css): markdown-it-py, nh3,
Pygments and latex2mathml load on first use.
"""
from __future__ import annotations

from .code import clean_language
from .css import CSS
from .export import export_markdown_text
from .rules import markdown as _markdown  # noqa: F401 - the one parser (benchmarks time it alone)
from .rules import render_html, render_text_html
from .sanitiser import ALLOWED_ATTRIBUTES, ALLOWED_CLASSES, ALLOWED_TAGS, LINK_SCHEMES, PYGMENTS_CLASSES, is_unsafe_url, sanitise
from .stream import AnswerRenderer

__all__ = ["ALLOWED_ATTRIBUTES", "ALLOWED_CLASSES", "ALLOWED_TAGS", "CSS", "LINK_SCHEMES", "PYGMENTS_CLASSES", "AnswerRenderer",
           "clean_language", "export_markdown_text", "is_unsafe_url", "render_html", "render_text_html", "sanitise"]
