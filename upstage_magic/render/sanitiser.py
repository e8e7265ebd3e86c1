"""Allow-lists, URL scheme checks and the nh3 cleaner: the last step of every render."""
from __future__ import annotations

import functools
import html
import re
import unicodedata
from typing import Any

LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_SCHEMES = frozenset({"http", "https"})

# Only what latex2mathml emits for ordinary formulas. Left out on purpose: maction,
# mglyph, semantics/annotation(-xml) (HTML integration points), and the attributes
# href, style, class, id, mathcolor, mathbackground that latex2mathml passes through from the
# TeX: a server must not paint coloured text or boxes (a red "SESSION EXPIRED") via math.
MATHML_TAGS = frozenset({
    "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup",
    "mfrac", "msqrt", "mroot", "mover", "munder", "munderover", "mtable", "mtr", "mtd",
    "mstyle", "mpadded", "mphantom", "menclose", "merror",
})
_MATHML_ATTRIBUTES: dict[str, frozenset[str]] = {tag: frozenset(names.split()) for tag, names in {
    "math": "display", "mover": "accent", "munder": "accentunder", "munderover": "accent accentunder",
    "mo": "stretchy fence separator form accent largeop movablelimits symmetric minsize maxsize lspace rspace",
    "mfrac": "linethickness", "mstyle": "displaystyle scriptlevel", "mspace": "width height depth",
    "mpadded": "width height depth lspace voffset", "menclose": "notation",
    "mtable": "columnalign rowalign columnlines rowlines columnspacing rowspacing frame",
    "mtd": "columnalign rowalign columnspan rowspan",
}.items()}

_HTML_TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "span",
})
ALLOWED_TAGS: frozenset[str] = _HTML_TAGS | MATHML_TAGS
"""Tags the renderer may emit (``img`` only with ``load_images=True``)."""

ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "target", "rel"}),
    "img": frozenset({"src", "alt", "title"}),
    "ol": frozenset({"start"}),
    "span": frozenset({"style"}),  # only ever exactly SPAN_STYLE (the MathML hidden for style-less views)
    **_MATHML_ATTRIBUTES,
}
"""Attributes per tag (besides ``class``, which only takes :data:`ALLOWED_CLASSES`)."""

_ALIGN_CLASSES = frozenset({"um-align-left", "um-align-center", "um-align-right"})

# Pygments' short token class names (pygments.token.STANDARD_TYPES, Pygments 2.x); a token
# whose class is not listed here is shown without one.
PYGMENTS_CLASSES = frozenset({
    "bp", "c", "c1", "ch", "cm", "cp", "cpf", "cs", "dl", "err", "esc", "fm", "g", "gd", "ge",
    "ges", "gh", "gi", "go", "gp", "gr", "gs", "gt", "gu", "il", "k", "kc", "kd", "kn", "kp",
    "kr", "kt", "l", "ld", "m", "mb", "mf", "mh", "mi", "mo", "n", "na", "nb", "nc", "nd", "ne",
    "nf", "ni", "nl", "nn", "no", "nt", "nv", "nx", "o", "ow", "p", "pm", "py", "s", "s1", "s2",
    "sa", "sb", "sc", "sd", "se", "sh", "si", "sr", "ss", "sx", "vc", "vg", "vi", "vm", "w", "x",
})

_HEADING_CLASSES = frozenset({"um-h", "jp-toc-ignore", "tocSkip"})

ALLOWED_CLASSES: dict[str, frozenset[str]] = {
    "pre": frozenset({"um-code", "um-text"}),
    "span": PYGMENTS_CLASSES | {"um-image-link", "um-math-source", "um-math", "um-math-display", "um-mathml"},
    "a": frozenset({"um-image-link"}), "th": _ALIGN_CLASSES, "td": _ALIGN_CLASSES, "code": frozenset({"um-tex"}),
    "h4": _HEADING_CLASSES, "h5": _HEADING_CLASSES, "h6": _HEADING_CLASSES,
}
"""``class`` values allowed per tag: Pygments token classes and our own ``um-*`` names."""

# ---------------------------------------------------------------------------- URLs

_BACKSLASH_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")


def _invisible(ch: str) -> bool:
    """Whitespace, controls, format and unassigned characters: a browser or parser may skip them."""
    return ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp")


def url_scheme(url: str) -> str | None:
    """The scheme ``url`` could be read as (lower case), or None for a URL without one.

    Sees through entities, backslash escapes (also nested) and every kind of whitespace,
    control or invisible format character anywhere in the URL.
    """
    u = url[:2048]
    for _ in range(4):
        prev = u
        u = _BACKSLASH_ESCAPE.sub(r"\1", html.unescape(u))
        if u == prev:
            break
    u = "".join(ch for ch in u if not _invisible(ch)).lower()
    m = _SCHEME.match(u)
    return m.group(1) if m else None


def url_allowed(url: str, schemes: frozenset[str] = LINK_SCHEMES) -> bool:
    """True if ``url`` is an absolute URL whose scheme is in ``schemes`` (relative URLs are refused)."""
    scheme = url_scheme(url)
    if scheme is None or scheme not in schemes:
        return False
    # The URL as written must start with that scheme too (what a browser reads), not only
    # after our cleaning: "\u00a0https://x" is a relative URL to a browser.
    return url[: len(scheme) + 1].lower() == scheme + ":"


def is_unsafe_url(url: str) -> bool:
    """True unless ``url`` is an absolute http, https or mailto URL (relative ones are unsafe too)."""
    return not url_allowed(url)


# ---------------------------------------------------------------------------- nh3


#: The one inline style the renderer emits (on a span around MathML); any other is dropped.
SPAN_STYLE = "display:none"


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Second check on URLs (ours, not only nh3's): the allow-listed schemes after cleaning.

    ``style`` is kept only on a ``span`` and only as exactly :data:`SPAN_STYLE`.
    """
    if attr == "style":
        return SPAN_STYLE if tag == "span" and value.replace(" ", "").rstrip(";") == SPAN_STYLE else None
    schemes = {"href": LINK_SCHEMES, "src": IMAGE_SCHEMES}.get(attr)
    return value if schemes is None or url_allowed(value, schemes) else None


@functools.lru_cache(maxsize=2)
def _cleaner(load_images: bool) -> Any:
    import nh3

    tags = set(ALLOWED_TAGS) | ({"img"} if load_images else set())
    attributes = {t: set(a - {"rel", "target"}) for t, a in ALLOWED_ATTRIBUTES.items() if t in tags}
    return nh3.Cleaner(
        tags=tags, clean_content_tags={"script", "style"}, attributes=attributes, attribute_filter=_attribute_filter,
        strip_comments=True, link_rel="noopener noreferrer", set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes=set(LINK_SCHEMES), url_relative="deny", allowed_classes={t: set(c) for t, c in ALLOWED_CLASSES.items()},
        filter_style_properties={"display"},
    )


def sanitise(fragment: str, *, load_images: bool = False) -> str:
    """Run an HTML fragment through the nh3 allow-list (the last step of every render)."""
    return str(_cleaner(bool(load_images)).clean(fragment))
