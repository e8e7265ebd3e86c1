"""The stylesheet for the renderer's HTML, scoped to ``.um-answer``; JupyterLab theme variables with fallbacks."""
CSS = """
.um-answer { line-height: 1.5; overflow-wrap: anywhere; }
.um-answer table { border-collapse: collapse; margin: 0.5em 0; display: block; overflow-x: auto; }
.um-answer th, .um-answer td { border: 1px solid var(--jp-border-color1, #ccc); padding: 0.25em 0.6em; }
.um-answer th { background: var(--jp-layout-color2, rgba(127,127,127,0.12)); font-weight: 600; }
.um-answer.um-answer th, .um-answer.um-answer td { text-align: left; }
.um-answer.um-answer .um-align-left { text-align: left; }
.um-answer.um-answer .um-align-center { text-align: center; }
.um-answer.um-answer .um-align-right { text-align: right; }
.um-answer h4.um-h, .um-answer h5.um-h, .um-answer h6.um-h { margin: 0.8em 0 0.3em; line-height: 1.3; }
.um-answer h4.um-h { font-size: var(--jp-content-font-size2, 1.2em); }
.um-answer h5.um-h, .um-answer h6.um-h { font-size: var(--jp-content-font-size1, 1em); }
.um-answer pre.um-code, .um-answer pre.um-text {
  background: var(--jp-cell-editor-background, rgba(127,127,127,0.08));
  border: 1px solid var(--jp-border-color2, rgba(127,127,127,0.25));
  border-radius: 3px; padding: 0.5em 0.75em; overflow-x: auto; max-width: 100%;
  font-family: var(--jp-code-font-family, monospace); font-size: var(--jp-code-font-size, 0.9em);
  line-height: var(--jp-code-line-height, 1.4); white-space: pre;
}
.um-answer pre.um-text { white-space: pre-wrap; }
.um-answer.um-answer pre code, .um-answer.um-answer pre code span {
  background: transparent; padding: 0; margin: 0; font: inherit; white-space: inherit; overflow: visible;
}
.um-answer.um-answer :not(pre) > code {
  background: var(--jp-layout-color2, rgba(127,127,127,0.15)); padding: 0 0.25em; border-radius: 3px;
  font-family: var(--jp-code-font-family, monospace);
}
.um-answer blockquote {
  margin: 0.5em 0; padding-left: 0.8em; color: var(--jp-content-font-color2, inherit);
  border-left: 3px solid var(--jp-border-color1, #ccc);
}
.um-answer a { color: var(--jp-content-link-color, #1a73e8); text-decoration: underline; }
.um-answer .um-image-link { font-style: italic; }
.um-answer .um-math-source { font-family: var(--jp-code-font-family, monospace); }
.um-answer .um-mathml { display: inline !important; }
.um-answer.um-answer code.um-tex { display: none; }
.um-answer math { display: inline-block; max-width: 100%; overflow-x: auto; vertical-align: middle; font-size: 1.1em; }
.um-answer .um-math-display { display: block; text-align: center; }
.um-answer math[display="block"] { display: block; display: block math; width: fit-content; max-width: 100%;
  margin: 0.5em auto; overflow-x: auto; font-size: 1.2em; }
.um-answer .k, .um-answer .kc, .um-answer .kd, .um-answer .kn, .um-answer .kp, .um-answer .kr,
.um-answer .ow { color: var(--jp-mirror-editor-keyword-color, #008000); font-weight: bold; }
.um-answer .kt { color: var(--jp-mirror-editor-builtin-color, #b00040); }
.um-answer .s, .um-answer .s1, .um-answer .s2, .um-answer .sa, .um-answer .sb, .um-answer .sc,
.um-answer .sd, .um-answer .se, .um-answer .sh, .um-answer .si, .um-answer .sr, .um-answer .ss,
.um-answer .sx, .um-answer .dl { color: var(--jp-mirror-editor-string-color, #ba2121); }
.um-answer .c, .um-answer .c1, .um-answer .cm, .um-answer .cs, .um-answer .ch, .um-answer .cp,
.um-answer .cpf { color: var(--jp-mirror-editor-comment-color, #408080); font-style: italic; }
.um-answer .m, .um-answer .mi, .um-answer .mf, .um-answer .mh, .um-answer .mo, .um-answer .mb,
.um-answer .il { color: var(--jp-mirror-editor-number-color, #080); }
.um-answer .o { color: var(--jp-mirror-editor-operator-color, #aa22ff); }
.um-answer .nb, .um-answer .bp { color: var(--jp-mirror-editor-builtin-color, #008000); }
.um-answer .nf, .um-answer .fm { color: var(--jp-mirror-editor-def-color, #0000ff); }
.um-answer .nc, .um-answer .nn { color: var(--jp-mirror-editor-def-color, #0000ff); font-weight: bold; }
.um-answer .nd, .um-answer .na { color: var(--jp-mirror-editor-attribute-color, #aa22ff); }
.um-answer .nt { color: var(--jp-mirror-editor-tag-color, #008000); font-weight: bold; }
.um-answer .nv, .um-answer .vc, .um-answer .vg, .um-answer .vi {
  color: var(--jp-mirror-editor-variable-2-color, #19177c);
}
.um-answer .err { color: var(--jp-mirror-editor-error-color, #f00); }
.um-answer .gd { color: var(--jp-error-color1, #a00000); }
.um-answer .gi { color: var(--jp-success-color1, #00a000); }
.um-answer .gh, .um-answer .gu { font-weight: bold; }
""".strip()
