// upstage-magic chat widget front end (anywidget ES module; no build step, no network).
//
// The kernel owns the conversation and renders every answer to sanitised HTML (render.py);
// this file only inserts that HTML, builds the controls, and talks to the kernel with
// custom messages. Prompts, errors and status are set with textContent, never as HTML.

const ACK_TIMEOUT_MS = 5000;   // a send/hello with no reply by then: the kernel is gone or busy
const NEAR_BOTTOM_PX = 48;     // "at the bottom" tolerance for following the stream
const DEAD_TEXT = "kernel restarted: run the cell again (the transcript above is read-only until then)";
const SLOW_TEXT = "no reply from the kernel: it is busy, or it was restarted (then run the cell again)";

const LABELS = { streaming: "streaming…", done: "done", stopped: "stopped", length: "cut at max tokens", error: "error" };

function h(tag, cls, text) {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined && text !== null) el.textContent = String(text);
  return el;
}

// Icons as inline SVG (no font glyphs: Debian's Chromium lacks some of them).
const SVGNS = "http://www.w3.org/2000/svg";
const ICONS = {
  stop: "M6 6h12v12H6z",
  warn: "M12 3 2 21h20L12 3zm-1 6h2v6h-2V9zm0 8h2v2h-2v-2z",
  down: "M11 4h2v12l5-5 1.4 1.4L12 19.8 4.6 12.4 6 11l5 5V4z",
  x: "M6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12 19 6.4 17.6 5 12 10.6 6.4 5z",
  cut: "M9 7a3 3 0 1 0-2 2.8L9.6 12 7 14.2A3 3 0 1 0 9 17l3-2.6 6 5.1h3L11 12l10-7.5h-3l-6 5.1-3-2.6zM6 5.5a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3zm0 10a1.5 1.5 0 1 1 0 3 1.5 1.5 0 0 1 0-3z",
  side: "M3 4h18v16H3V4zm2 2v12h9V6H5zm11 0v12h3V6h-3z",
};
function icon(name, cls) {
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "upstage-icon" + (cls ? " " + cls : ""));
  const path = document.createElementNS(SVGNS, "path");
  path.setAttribute("d", ICONS[name]);
  path.setAttribute("fill", "currentColor");
  svg.appendChild(path);
  return svg;
}
function note(iconName, text) {
  const n = h("div", "upstage-answer-note");
  n.append(icon(iconName), document.createTextNode(" " + text));
  return n;
}

// Which front end the page is: JupyterLab has a .jp-LabShell, Notebook 7 a .jp-NotebookShell
// (body data-notebook), VS Code's webview offers acquireVsCodeApi / vscode-* body classes, the
// classic notebook window.Jupyter. Only JupyterLab has the side area sidecar docks into.
function frontEnd() {
  const b = document.body;
  if (typeof globalThis.acquireVsCodeApi === "function" || (b && (b.dataset.vscodeThemeKind ||
      /\bvscode-/.test(b.className)))) return "VS Code";
  if (document.querySelector(".jp-LabShell")) return "JupyterLab";
  if (document.querySelector(".jp-NotebookShell") || (b && b.dataset.notebook)) return "Notebook 7";
  if (globalThis.Jupyter && globalThis.Jupyter.notebook) return "the classic notebook";
  return "this front end";
}

// JupyterLab lists the extensions it loads in its page config: is sidecar's one of them?
const SIDECAR_EXT = "@jupyter-widgets/jupyterlab-sidecar";
function sidecarLoaded() {
  try {
    const c = JSON.parse(document.getElementById("jupyter-config-data").textContent);
    const off = c.disabledExtensions || [];
    const disabled = Array.isArray(off) ? off.includes(SIDECAR_EXT) : !!off[SIDECAR_EXT];
    return (c.federated_extensions || []).some((e) => e.name === SIDECAR_EXT) && !disabled;
  } catch (_e) {
    return true;  // no readable page config: let the kernel try
  }
}

function button(cls, label, title) {
  const b = h("button", "upstage-btn " + cls, label);
  b.type = "button";
  if (title) b.title = title;
  return b;
}

async function writeClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_e) {
    const ta = h("textarea");
    ta.value = text;
    ta.style.position = "fixed";
    ta.style.opacity = "0";
    document.body.appendChild(ta);
    ta.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_e2) { ok = false; }
    ta.remove();
    return ok;
  }
}

// The exact code of a rendered block: the text of its <code> (or <pre>), one final newline off.
function codeText(pre) {
  const code = pre.querySelector("code") || pre;
  const t = code.textContent || "";
  return t.endsWith("\n") ? t.slice(0, -1) : t;
}

// Give every code block in `root` a Copy button (once), wrapped so the button stays put
// while the code scrolls sideways inside its own box.
function decorateCode(root) {
  for (const pre of root.querySelectorAll("pre")) {
    if (pre.parentElement && pre.parentElement.classList.contains("upstage-code")) continue;
    const wrap = h("div", "upstage-code");
    pre.parentNode.insertBefore(wrap, pre);
    wrap.appendChild(pre);
    wrap.appendChild(button("upstage-copy-code", "Copy", "Copy this code"));
  }
}

// Long answers: the blocks go into chunks of CHUNK_BLOCKS, each `content-visibility: auto`
// (chat.css), so the browser skips style, layout, paint and hit testing of the chunks out of
// view and tracks a few dozen chunks, not every paragraph (per-block tracking of a 20,000-token
// answer cost tens of ms per frame: bench_widget.py --trace).
const CHUNK_BLOCKS = 24;
function appendChunked(container, nodes) {
  let chunk = container.lastElementChild;
  for (const n of nodes) {
    if (!chunk || !chunk.classList.contains("upstage-chunk") || chunk.childElementCount >= CHUNK_BLOCKS) {
      chunk = h("div", "upstage-chunk");
      container.appendChild(chunk);
    }
    chunk.appendChild(n);
  }
}

// A "turns" message: the new entries and the ids in order. Applied to the model's own
// transcript, locally (never saved back to the kernel), so every view appends only the new
// turns and "save widget state" still writes the whole transcript. A view that misses an
// entry asks for the whole list once ("resync").
function applyTurns(model, msg) {
  const byId = new Map((model.get("transcript") || []).map((t) => [t.id, t]));
  for (const t of msg.add || []) byId.set(t.id, t);
  const list = [];
  for (const id of msg.ids || []) {
    const t = byId.get(id);
    if (!t) { try { model.send({ type: "resync" }); } catch (_e) { /* no kernel */ } return; }
    list.push(t);
  }
  model.set("transcript", list);
}

function initialize({ model }) {
  model.on("msg:custom", (msg) => { if (msg && msg.type === "turns") applyTurns(model, msg); });
  // No hello from here: each view's own (render) asks for the live answer in full. Every message
  // a page sends unasked while a cell runs is a chance for ipykernel 7.4.0's idle race (README).
}

function render({ model, el }) {
  let seq = 0;
  const pending = new Map();   // id -> {text, timer}
  let alive = false;           // heard from the kernel since this view was made
  let dead = false;
  let stick = true;            // follow the stream (the user has not scrolled up)
  let lastQuestion = "";

  // ------------------------------------------------------------------ skeleton
  const root = h("div", "upstage-chat mathjax_ignore tex2jax_ignore"); // we render math ourselves: MathJax must not typeset server text
  // Lumino (JupyterLab/Notebook 7) must not treat our keys as notebook shortcuts.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.setAttribute("data-p-suppress-shortcuts", "true");
  const scrollBox = h("div", "upstage-chat-scroll");
  const transcript = h("div", "upstage-chat-transcript");
  transcript.setAttribute("role", "log");
  transcript.setAttribute("aria-live", "polite");
  const intro = h("div", "upstage-intro");
  const hiddenNote = h("div", "upstage-hidden-note");
  const turnsEl = h("div", "upstage-turns");
  const noticeEl = h("div", "upstage-notice-slot");
  transcript.append(intro, hiddenNote, turnsEl, noticeEl);
  scrollBox.appendChild(transcript);
  const jump = button("upstage-jump", " Jump to latest", "Scroll to the newest message");
  jump.prepend(icon("down"));
  jump.hidden = true;
  const scrollWrap = h("div", "upstage-chat-scrollwrap");
  scrollWrap.append(scrollBox, jump);

  const banner = h("div", "upstage-chat-banner");
  banner.setAttribute("role", "status");
  banner.hidden = true;

  const input = h("textarea", "upstage-chat-input");
  input.rows = 2;
  input.placeholder = "Ask Solar…";
  input.title = "Enter sends · Shift+Enter: new line · Esc: stop · Up: last question";
  input.setAttribute("aria-label", "Question for the model");
  const sendBtn = button("upstage-chat-send upstage-primary", "Send", "Send (Enter)");
  const stopBtn = button("upstage-chat-stop", "Stop", "Stop the answer; what arrived is kept (Esc)");
  const inputRow = h("div", "upstage-chat-inputrow");
  const btnCol = h("div", "upstage-chat-btncol");
  btnCol.append(sendBtn, stopBtn);
  inputRow.append(input, btnCol);

  const retryBtn = button("upstage-chat-retry", "Retry", "Ask the last question again (replaces its answer)");
  const newBtn = button("upstage-chat-new", "New chat", "Forget the conversation");
  const mdBtn = button("upstage-chat-export", "Export .md", "Download the conversation as Markdown");
  const jsonBtn = button("upstage-chat-export-json", "Export .json", "Download the conversation as JSON");
  const fixBtn = button("upstage-chat-fix", "Fix last error", "Explain the notebook's last error and propose a corrected cell");
  const status = h("div", "upstage-chat-status");
  status.setAttribute("aria-live", "polite");
  const actions = h("div", "upstage-chat-actions");
  actions.append(fixBtn, retryBtn, newBtn, mdBtn, jsonBtn);

  // Settings (collapsed): written to the kernel's Settings on change.
  const settings = h("details", "upstage-chat-settings");
  const summary = h("summary", null, "Settings");
  const form = h("div", "upstage-settings-form");
  const listId = "upstage-models-" + Math.random().toString(36).slice(2);
  const modelIn = h("input", "upstage-set-model");
  modelIn.setAttribute("list", listId);
  const modelList = h("datalist");
  modelList.id = listId;
  const systemIn = h("textarea", "upstage-set-system");
  systemIn.rows = 2;
  systemIn.placeholder = "(none)";
  const tempIn = h("input", "upstage-set-temperature");
  Object.assign(tempIn, { type: "number", min: "0", max: "2", step: "0.05", placeholder: "server default" });
  const maxIn = h("input", "upstage-set-max-tokens");
  Object.assign(maxIn, { type: "number", min: "0", step: "256", placeholder: "server default" });
  const field = (label, control) => {
    const row = h("label", "upstage-field");
    row.append(h("span", "upstage-field-label", label), control);
    return row;
  };
  form.append(field("Model", modelIn), modelList, field("System prompt", systemIn),
              field("Temperature", tempIn), field("Max tokens", maxIn),
              h("div", "upstage-settings-note",
                "Empty = default. Shared with %%upstage and %config UpstageMagics when the widget uses the kernel's settings."));
  settings.append(summary, form);

  // Header: the model in use from the start, and the side-panel button (JupyterLab only).
  const header = h("div", "upstage-chat-header");
  const titleEl = h("span", "upstage-chat-title", "Solar chat");
  const modelChip = h("span", "upstage-chat-model");
  modelChip.setAttribute("title", "The model this chat uses (change it in Settings)");
  const sideBtn = button("upstage-chat-side", " Side panel", "Open this chat in JupyterLab's side panel (stays while the notebook scrolls)");
  sideBtn.prepend(icon("side"));
  header.append(titleEl, modelChip, sideBtn);
  const sideNote = h("div", "upstage-quiet upstage-side-note");
  sideNote.hidden = true;
  const elsewhere = h("div", "upstage-quiet upstage-elsewhere-note");
  const showHere = button("upstage-show-here", "Show here", "Show the chat in this cell too");
  elsewhere.append(document.createTextNode("This chat is open in the side panel. "), showHere);
  const queueEl = h("div", "upstage-queue");
  const undoEl = h("div", "upstage-quiet upstage-undo");
  undoEl.hidden = true;
  const hintEl = h("div", "upstage-quiet upstage-hint");
  hintEl.hidden = true;
  hintEl.setAttribute("role", "status");
  transcript.insertBefore(queueEl, noticeEl);

  root.append(header, sideNote, elsewhere, scrollWrap, banner, hintEl, undoEl, inputRow, status, actions, settings);
  el.appendChild(root);

  // ------------------------------------------------------------------ helpers
  const nearBottom = () => scrollBox.scrollHeight - scrollBox.scrollTop - scrollBox.clientHeight <= NEAR_BOTTOM_PX;
  let lastTop = 0;  // the transcript's last scroll position (to tell a user's scroll up)
  // Scroll once per frame, in the frame's own layout (reading scrollHeight right after an
  // update would force a synchronous layout of the whole transcript inside our task).
  let scrollQueued = false;
  const toBottom = () => {
    stick = true;
    jump.hidden = true;
    if (scrollQueued) return;
    scrollQueued = true;
    requestAnimationFrame(() => {
      scrollQueued = false;
      if (!stick) return;
      scrollBox.scrollTop = scrollBox.scrollHeight;
      lastTop = scrollBox.scrollTop;
    });
  };
  // Call after content changed: follow the stream, or offer the jump button.
  const followed = () => { if (stick) toBottom(); else jump.hidden = false; };
  // Only the user scrolling up stops the following; reflows (a narrower cell, new content)
  // also fire scroll events, but never move the view up.
  scrollBox.addEventListener("scroll", () => {
    const top = scrollBox.scrollTop;
    if (top < lastTop - 2) stick = nearBottom();
    else if (nearBottom()) stick = true;
    lastTop = top;
    if (stick) jump.hidden = true;
  }, { passive: true });
  jump.addEventListener("click", () => { toBottom(); input.focus(); });
  // Content reflowed (narrower cell, math or images laid out): stay at the bottom if following.
  const resizer = typeof ResizeObserver === "function"
    ? new ResizeObserver(() => { if (stick) toBottom(); }) : null;
  if (resizer) resizer.observe(transcript);

  const focusInput = () => {
    const a = document.activeElement;
    if (!a || a === document.body || root.contains(a)) input.focus({ preventScroll: true });
  };

  function errorBox(err, withRetry) {
    const box = h("div", "upstage-error");
    box.setAttribute("role", "alert");
    const head = h("div", "upstage-error-head");
    head.append(icon("warn", "upstage-error-icon"), h("strong", "upstage-error-kind", err.kind || "Error"));
    box.append(head, h("div", "upstage-error-message", err.message || ""));
    if (err.hint) {
      const hint = h("div", "upstage-error-hint");
      hint.append(h("strong", null, "What to do: "), document.createTextNode(err.hint));
      box.appendChild(hint);
    }
    if (withRetry) box.appendChild(button("upstage-retry-turn", "Retry", "Ask this question again"));
    return box;
  }

  function userBubble(prompt) {
    const u = h("div", "upstage-user");
    u.append(h("div", "upstage-label", "You"), h("div", "upstage-user-text", prompt));
    return u;
  }

  function answerShell(model_, status_) {
    const a = h("div", "upstage-answer upstage-status-" + status_);
    const head = h("div", "upstage-answer-head");
    const meta = h("span", "upstage-answer-meta");
    head.append(meta);
    const reasoning = h("details", "upstage-reasoning");
    reasoning.hidden = true;
    reasoning.append(h("summary", null, "Thinking…"), h("div", "upstage-reasoning-body um-answer"));
    const tools = h("div", "upstage-tools um-answer");  // tool calls: cards, then blocks (kernel HTML)
    const body = h("div", "upstage-answer-body um-answer");
    a.append(head, reasoning, tools, body);
    return { a, head, meta, reasoning, tools, body };
  }

  function turnElement(t) {
    const wrap = h("div", "upstage-turn");
    wrap.dataset.id = String(t.id);
    const { a, head, meta, reasoning, tools, body } = answerShell(t.model, t.status);
    meta.textContent = (t.model || "assistant") + " · " + (t.stats || LABELS[t.status] || t.status);
    tools.innerHTML = t.tools_html || "";
    if (t.html) {
      const copy = button("upstage-copy-answer", "Copy answer", "Copy the whole answer (Markdown)");
      head.appendChild(copy);
    }
    if (t.reasoning_html) {
      reasoning.hidden = false;
      reasoning.open = false;
      reasoning.querySelector("summary").textContent = "Thinking (click to show)";
      reasoning.querySelector(".upstage-reasoning-body").innerHTML = t.reasoning_html;
    }
    body.innerHTML = t.html || "";
    decorateCode(body);
    appendChunked(body, [...body.childNodes]);
    if (t.status === "stopped") a.appendChild(note("stop", "stopped: partial answer (kept here, not sent back as context)"));
    if (t.status === "length") a.appendChild(note("cut", "cut at max tokens (raise Max tokens in Settings for longer answers)"));
    wrap.append(userBubble(t.prompt), a);
    if (t.status === "error") wrap.appendChild(errorBox(t.error || { kind: "Error", message: "the answer failed" }, true));
    return wrap;
  }

  // ------------------------------------------------------------------ transcript
  const turnEls = new Map();
  // Turns that left the transcript are removed a chunk per task: a long answer pushes several
  // long turns out at once, and removing (or hiding) them in one go was one 50-65 ms task (--trace).
  const doomed = new Set();
  function dropNext() {
    const n = doomed.values().next().value;
    if (!n) return;
    const piece = n.querySelector(".upstage-chunk");
    if (piece) piece.remove(); else { n.remove(); doomed.delete(n); }
    if (doomed.size) setTimeout(dropNext, 0);
  }
  function renderTranscript() {
    const list = model.get("transcript") || [];
    const keep = new Set(list.map((t) => String(t.id)));
    for (const [id, node] of turnEls) {
      if (keep.has(id)) continue;
      turnEls.delete(id);
      node.classList.add("upstage-doomed");  // gone from view at once, torn down by chunks (chat.css)
      doomed.add(node);
      if (doomed.size === 1) setTimeout(dropNext, 0);
    }
    let prev = null;
    for (const t of list) {
      const id = String(t.id);
      let node = turnEls.get(id);
      if (!node) { node = turnElement(t); turnEls.set(id, node); }
      let want = prev ? prev.nextSibling : turnsEl.firstChild;
      while (want && doomed.has(want)) want = want.nextSibling;
      if (want !== node) turnsEl.insertBefore(node, want);
      prev = node;
    }
    const hidden = (model.get("hidden_turns") || [])[0] || 0;
    hiddenNote.hidden = !hidden;
    hiddenNote.textContent = hidden ? `${hidden} earlier turn${hidden === 1 ? "" : "s"} not shown here (Export has the whole conversation).` : "";
    intro.hidden = list.length > 0 || !!live;
    intro.textContent = "Ask Solar something below. Answers stream in here; Stop keeps what arrived. " +
      (model.get("shared") ? "The conversation is shared with %%upstage cells." : "The conversation is private to this widget.");
    if (list.length && !lastQuestion) lastQuestion = list[list.length - 1].prompt;
    followed();
  }

  // ------------------------------------------------------------------ live answer
  let live = null;  // {wrap, meta, body, frozen, tail, reasoning}
  function renderLive() {
    const l = model.get("live") || {};
    if (!l.prompt) {
      if (live) { live.wrap.remove(); live = null; }
      intro.hidden = (model.get("transcript") || []).length > 0;
      return;
    }
    if (live && live.prompt === l.prompt) {
      live.meta.textContent = (l.model || "assistant") + " · " + (l.stats || "streaming…");
      return;
    }
    if (live) live.wrap.remove();
    const wrap = h("div", "upstage-turn upstage-live");
    const { a, meta, reasoning, tools, body } = answerShell(l.model, "streaming");
    const frozen = h("div", "upstage-frozen");
    const tail = h("div", "upstage-tail");
    const caret = h("span", "upstage-caret");
    caret.setAttribute("aria-hidden", "true");
    body.append(frozen, tail, caret);
    meta.textContent = (l.model || "assistant") + " · " + (l.stats || "streaming…");
    wrap.append(userBubble(l.prompt), a);
    turnsEl.appendChild(wrap);  // last of the turns; it stays where it is when it ends
    live = { wrap, meta, body, frozen, tail, reasoning, caret, tools, prompt: l.prompt };
    intro.hidden = true;
    toBottom();  // the user's own new question is always revealed
  }

  // The live answer just ended: turn its DOM into the finished turn (final tail, status,
  // notes, buttons) instead of rebuilding it from the turn's HTML.
  function adoptLive(msg) {
    if (!live) return;
    const l = live;
    live = null;
    const t = msg.entry;
    if (!t || typeof msg.live_tail !== "string") { l.wrap.remove(); return; }
    l.caret.remove();
    l.tail.innerHTML = msg.live_tail;
    decorateCode(l.tail);
    const a = l.body.parentElement;
    a.className = "upstage-answer upstage-status-" + t.status;
    l.meta.textContent = (t.model || "assistant") + " · " + (t.stats || LABELS[t.status] || t.status);
    l.meta.parentElement.appendChild(button("upstage-copy-answer", "Copy answer", "Copy the whole answer (Markdown)"));
    if (t.reasoning_html) {
      l.reasoning.hidden = false;
      l.reasoning.open = false;
      l.reasoning.querySelector("summary").textContent = "Thinking (click to show)";
      l.reasoning.querySelector(".upstage-reasoning-body").innerHTML = t.reasoning_html;
    } else {
      l.reasoning.hidden = true;
    }
    if (t.status === "stopped") a.appendChild(note("stop", "stopped: partial answer (kept here, not sent back as context)"));
    if (t.status === "length") a.appendChild(note("cut", "cut at max tokens (raise Max tokens in Settings for longer answers)"));
    if (t.status === "error") l.wrap.appendChild(errorBox(t.error || { kind: "Error", message: "the answer failed" }, true));
    l.wrap.classList.remove("upstage-live");
    l.wrap.dataset.id = String(t.id);
    turnEls.set(String(t.id), l.wrap);  // not moved: re-inserting a long answer's DOM cost ~60 ms
  }

  // The caret sits at the end of the text: inside the deepest last block of the tail (or of
  // the frozen part when the tail is empty), not on a line of its own.
  const CONTAINERS = new Set(["UL", "OL", "LI", "BLOCKQUOTE", "TABLE", "THEAD", "TBODY", "TR", "TD", "TH", "DIV", "PRE", "DETAILS"]);
  function placeCaret(l) {
    const caret = l.caret;
    let host = l.tail.lastElementChild ? l.tail : (l.frozen.lastElementChild ? l.frozen : l.tail);
    for (let el = host.lastElementChild; el && el !== caret; el = el.lastElementChild) {
      host = el;
      if (!CONTAINERS.has(el.tagName) || el.classList.contains("upstage-code")) {
        if (el.classList.contains("upstage-code")) host = el.querySelector("code") || el.querySelector("pre") || el;
        break;
      }
    }
    if (host.classList.contains("upstage-code")) host = host.querySelector("pre") || host;
    if (caret.parentNode !== host || host.lastChild !== caret) host.appendChild(caret);
  }

  // A tool call of the live answer: an approval card (Approve / Deny / Always) while the kernel
  // waits, then the call's block. The HTML is the kernel's (rendered, sanitised); the buttons
  // are ours and send only the card's id, which the kernel handed out.
  function applyTool(msg) {
    if (!live) return;
    let card = live.tools.querySelector(`[data-call="${Number(msg.id)}"]`);
    if (!card) {
      card = h("div", "upstage-tool-card");
      card.dataset.call = String(Number(msg.id));
      live.tools.appendChild(card);
    }
    card.innerHTML = msg.html || "";
    card.classList.toggle("upstage-tool-asking", !!msg.ask);
    if (msg.ask) {
      const row = h("div", "upstage-tool-buttons");
      const choices = [["yes", "Approve", "Run this call once"], ["no", "Deny", "Do not run it; the model is told"]];
      if (msg.always) choices.push(["always", "Always", "Run this tool without asking for the rest of this session"]);
      for (const [answer, label, title] of choices) {
        const b = button("upstage-tool-" + answer, label, title);
        b.addEventListener("click", () => {
          for (const other of row.querySelectorAll("button")) other.disabled = true;
          model.send({ type: "approval", id: Number(msg.id), answer });
        });
        row.appendChild(b);
      }
      card.appendChild(row);
    }
    followed();
  }

  function applyLive(msg) {
    if (!live) return;
    if (msg.reset) {
      if (live.frozen.contains(live.caret)) live.body.appendChild(live.caret);
      live.frozen.replaceChildren();
    }
    if (msg.append) {
      const holder = document.createElement("div");
      holder.innerHTML = msg.append;
      decorateCode(holder);
      appendChunked(live.frozen, [...holder.childNodes]);
    }
    if (live.tail.contains(live.caret)) live.body.appendChild(live.caret);  // innerHTML must not drop it
    live.tail.innerHTML = msg.tail || "";
    decorateCode(live.tail);
    if (msg.reasoning) {
      live.reasoning.hidden = false;
      live.reasoning.open = !(live.frozen.firstChild || live.tail.firstChild);
      live.reasoning.querySelector(".upstage-reasoning-body").innerHTML = msg.reasoning;
    }
    if (msg.stats) live.meta.textContent = ((model.get("live") || {}).model || "assistant") + " · " + msg.stats;
    placeCaret(live);
    followed();
  }

  // ------------------------------------------------------------------ status, notice, busy
  const statusText = h("span", "upstage-status-text");
  status.append(h("span", "upstage-dot"), statusText);
  function renderStatus() {
    const s = model.get("status") || "";
    statusText.textContent = s;
    status.title = s;
    status.classList.toggle("upstage-on", !!model.get("busy"));
  }
  // Notices not tied to an answer (a refused send, settings, export) are one quiet line by
  // the input, with a dismiss button; they clear when their cause is gone (next send, the
  // answer ending, the kernel clearing them). Answer errors stay in their turn.
  let localHint = false;
  function showHint(n) {
    hintEl.replaceChildren();
    if (!n || !n.kind) { hintEl.hidden = true; return; }
    const x = button("upstage-hint-dismiss", "", "Dismiss");
    x.append(icon("x"));
    x.setAttribute("aria-label", "Dismiss");
    const msgText = (n.message || n.kind) + (n.hint ? " · " + n.hint : "");
    hintEl.append(h("span", "upstage-hint-text", msgText), x);
    hintEl.title = msgText;
    hintEl.hidden = false;
  }
  function renderNotice() {
    localHint = false;
    showHint(model.get("notice") || {});
  }
  function clearLocalHint() { if (localHint) { localHint = false; showHint(model.get("notice") || {}); } }
  hintEl.addEventListener("click", (e) => {
    if (e.target instanceof Element && e.target.closest(".upstage-hint-dismiss")) {
      if (!localHint) model.send({ type: "dismiss" });
      localHint = false; showHint(null);
    }
  });

  // Questions waiting for the answer in progress: shown in order, each cancellable.
  function renderQueue() {
    const q = model.get("queued") || [];
    queueEl.replaceChildren(...q.map((item) => {
      const row = h("div", "upstage-queued");
      row.dataset.qid = String(item.id);
      const x = button("upstage-unqueue", "", "Cancel this question (it goes back into the box if the box is empty)");
      x.append(icon("x"));
      x.setAttribute("aria-label", "Cancel queued question");
      row.append(h("span", "upstage-queued-label", "Queued"), h("span", "upstage-queued-text", item.text), x);
      return row;
    }));
    if (q.length) followed();
  }
  queueEl.addEventListener("click", (e) => {
    const row = e.target instanceof Element && e.target.closest(".upstage-unqueue") && e.target.closest(".upstage-queued");
    if (!row) return;
    const text = row.querySelector(".upstage-queued-text").textContent;
    if (!input.value) input.value = text;
    model.send({ type: "unqueue", qid: Number(row.dataset.qid) });
    input.focus();
  });

  // New chat can be undone until the next question.
  const undoBtn = button("upstage-chat-undo", "Undo", "Bring the cleared chat back");
  function renderUndo() {
    const n = model.get("undo_turns") || 0;
    undoEl.replaceChildren();
    undoEl.hidden = !n;
    if (n) undoEl.append(document.createTextNode(`Chat cleared (${n} turn${n === 1 ? "" : "s"}). `), undoBtn);
  }
  undoBtn.addEventListener("click", () => { model.send({ type: "undo" }); input.focus(); });
  let wasBusy = !!model.get("busy");
  function renderBusy() {
    const busy = !!model.get("busy");
    const ended = wasBusy && !busy;
    wasBusy = busy;
    const turns = (model.get("transcript") || []).length + ((model.get("hidden_turns") || [])[0] || 0);
    sendBtn.disabled = dead;  // while an answer streams, Send queues the question
    sendBtn.textContent = busy ? "Queue" : "Send";
    sendBtn.title = busy ? "Queue this question: it is sent when the answer ends (Enter)" : "Send (Enter)";
    stopBtn.disabled = !busy || dead;
    retryBtn.disabled = busy || dead || !turns;
    fixBtn.disabled = busy || dead;
    newBtn.disabled = dead || (!turns && !busy);
    for (const b of [mdBtn, jsonBtn]) b.disabled = dead || !turns;  // nothing to export yet
    if (ended) clearLocalHint();
    root.classList.toggle("upstage-busy", busy);
    if (ended) focusInput();  // the answer is in: back to the box for the next question
  }
  function renderSettings() {
    const s = model.get("settings") || {};
    const set = (inp, v) => { if (document.activeElement !== inp) inp.value = v === null || v === undefined ? "" : String(v); };
    set(modelIn, s.model);
    modelIn.placeholder = s.default_model ? `default: ${s.default_model}` : "default";
    set(systemIn, s.system_prompt);
    set(tempIn, s.temperature);
    set(maxIn, s.max_tokens);
  }
  function renderModels() {
    modelList.replaceChildren(...(model.get("models") || []).map((m) => { const o = h("option"); o.value = m; return o; }));
  }

  // ------------------------------------------------------------------ header, side panel
  function renderHeader() {
    const st = model.get("settings") || {};
    const m = st.model || st.default_model || "";
    modelChip.textContent = m;
    modelChip.title = m ? "Model: " + m + " (change it in Settings)" : "";
    modelChip.hidden = !m;
  }
  const host = frontEnd();
  let inSide = false;
  let showInline = false;
  function renderSide() {
    sideBtn.hidden = host !== "JupyterLab" || inSide;
    root.classList.toggle("upstage-in-side", inSide);
    const away = !!model.get("side_open") && !inSide && !showInline;
    root.classList.toggle("upstage-elsewhere", away);
    elsewhere.hidden = !away;
  }
  showHere.addEventListener("click", () => { showInline = true; renderSide(); });
  function openSide() {
    if (host !== "JupyterLab") {
      sideNote.textContent = `Side panel: only JupyterLab has one (this is ${host}), so the chat stays here.`;
      sideNote.hidden = false;
      return;
    }
    if (!sidecarLoaded()) {
      sideNote.textContent = "Side panel: JupyterLab has not loaded sidecar's extension (pip install sidecar, then reload the page), so the chat stays here.";
      sideNote.hidden = false;
      return;
    }
    sideNote.hidden = true;
    showInline = false;
    try { model.send({ type: "side" }); } catch (_e) { /* no kernel: the banner says so */ }
  }
  sideBtn.addEventListener("click", openSide);
  // Where this view is (once attached): in sidecar's panel (.jupyterlab-sidecar) or a cell.
  let whereTries = 0;
  const checkWhere = () => {
    if (!el.isConnected) { if (++whereTries < 100) setTimeout(checkWhere, 100); return; }
    inSide = !!el.closest(".jupyterlab-sidecar");
    if (inSide) { try { model.send({ type: "where", side: true }); } catch (_e) { /* no kernel */ } }
    else if (model.get("want_side") && !model.get("side_open")) openSide();  // %upstage chat --side
    renderSide();
  };
  setTimeout(checkWhere, 0);

  // ------------------------------------------------------------------ kernel link
  function setDead(text) {
    banner.textContent = text;
    banner.hidden = false;
    if (text === DEAD_TEXT) {
      dead = true;
      root.classList.add("upstage-dead");
      if (live) live.wrap.classList.add("upstage-interrupted");
      renderBusy();
    }
  }
  function heard() {
    alive = true;
    if (!banner.hidden) { banner.hidden = true; banner.textContent = ""; }
    if (dead) { dead = false; root.classList.remove("upstage-dead"); renderBusy(); }
  }
  function ping(onTimeout) {
    const id = ++seq;
    const timer = setTimeout(() => { pending.delete(id); onTimeout(); }, ACK_TIMEOUT_MS);
    pending.set(id, { text: null, timer });
    try { model.send({ type: "hello", id }); } catch (_e) { /* no comm: the timer reports it */ }
  }

  function doSend() {
    const text = input.value;
    if (!text.trim()) return;
    if (dead) { setDead(DEAD_TEXT); return; }
    const id = ++seq;
    lastQuestion = text;
    const timer = setTimeout(() => {
      pending.delete(id);
      setDead(alive ? SLOW_TEXT : DEAD_TEXT);
    }, ACK_TIMEOUT_MS);
    pending.set(id, { text, timer });
    stick = true;
    try {
      model.send({ type: "send", id, text });
    } catch (_e) {
      clearTimeout(timer);
      pending.delete(id);
      setDead(DEAD_TEXT);
    }
  }

  function onAck(msg) {
    const p = pending.get(msg.id);
    if (!p) return;
    clearTimeout(p.timer);
    pending.delete(msg.id);
    if (msg.type === "hello") return;
    if (msg.ok) {
      // Clear only what was sent: anything typed after pressing Enter stays.
      if (input.value === p.text) input.value = "";
      else if (input.value.startsWith(p.text)) input.value = input.value.slice(p.text.length).replace(/^\n/, "");
      clearLocalHint();
      toBottom();
      focusInput();
    } else {
      if (!input.value) input.value = p.text;  // the question goes back into the box
      model_notice_local(msg.error);
      focusInput();
    }
  }
  function model_notice_local(err) {
    showHint(err || { kind: "Error", message: "not sent" });
    localHint = true;
  }

  function download(msg) {
    const blob = new Blob([msg.text], { type: (msg.mime || "text/plain") + ";charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const a = h("a", "upstage-download");
    a.href = url;
    a.download = msg.name || "upstage-chat.md";
    a.hidden = true;
    root.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
    statusText.textContent = "downloaded " + a.download;
  }

  const copyWaiters = new Map();
  const onMsg = (msg) => {
    if (!msg || typeof msg !== "object") return;
    heard();
    switch (msg.type) {
      case "ack": case "hello": onAck(msg); break;
      case "live": applyLive(msg); break;
      case "adopt": adoptLive(msg); break;  // the "turns" message adding the turn comes right after
      case "turns":  // the model's transcript is updated (initialize); a finished turn replaces the live one
        if (live && (msg.add || []).some((t) => t.prompt === live.prompt)) { live.wrap.remove(); live = null; }
        break;
      case "tool": applyTool(msg); break;
      case "export": download(msg); break;
      case "side": if (!msg.ok) { sideNote.textContent = "Side panel: " + (msg.why || "not available") + "."; sideNote.hidden = false; } break;
      case "copy": { const w = copyWaiters.get(msg.id); if (w) { copyWaiters.delete(msg.id); w(msg.text); } break; }
      default: break;
    }
  };
  model.on("msg:custom", onMsg);

  // ------------------------------------------------------------------ events
  input.addEventListener("keydown", (e) => {
    if (e.isComposing || e.keyCode === 229) return;
    if (e.key === "Enter" && !e.shiftKey && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault(); e.stopPropagation(); doSend();
    } else if (e.key === "Enter" && e.shiftKey && !e.ctrlKey && !e.metaKey) {
      // Insert the newline ourselves: JupyterLab cancels line breaks typed inside a cell.
      e.preventDefault(); e.stopPropagation();
      if (!document.execCommand || !document.execCommand("insertText", false, "\n")) {
        input.setRangeText("\n", input.selectionStart, input.selectionEnd, "end");
      }
    } else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault(); e.stopPropagation(); doSend();
    } else if (e.key === "Escape") {
      e.preventDefault(); e.stopPropagation();
      if (model.get("busy")) model.send({ type: "stop" });
    } else if (e.key === "ArrowUp" && !input.value && lastQuestion) {
      e.preventDefault(); input.value = lastQuestion;
      input.setSelectionRange(input.value.length, input.value.length);
    }
  });
  sendBtn.addEventListener("click", () => { doSend(); input.focus(); });
  stopBtn.addEventListener("click", () => { model.send({ type: "stop" }); input.focus(); });
  // "Fix last error": shown only when the kernel has recorded an error in a cell.
  function renderFix() {
    const label = model.get("last_error") || "";
    fixBtn.hidden = !label;
    fixBtn.title = label ? "Explain and fix: " + label : "";
  }
  renderFix();
  fixBtn.addEventListener("click", () => { stick = true; model.send({ type: "fix" }); input.focus(); });
  retryBtn.addEventListener("click", () => { stick = true; model.send({ type: "retry" }); input.focus(); });
  newBtn.addEventListener("click", () => { model.send({ type: "new" }); input.focus(); });
  mdBtn.addEventListener("click", () => model.send({ type: "export", format: "md" }));
  jsonBtn.addEventListener("click", () => model.send({ type: "export", format: "json" }));
  const sendSettings = () => model.send({ type: "settings", values: {
    model: modelIn.value.trim(), system_prompt: systemIn.value,
    temperature: tempIn.value === "" ? null : Number(tempIn.value),
    max_tokens: maxIn.value === "" ? null : Number(maxIn.value),
  } });
  for (const inp of [modelIn, systemIn, tempIn, maxIn]) inp.addEventListener("change", sendSettings);

  root.addEventListener("click", async (e) => {
    const t = e.target;
    if (!(t instanceof Element)) return;
    if (t.closest(".upstage-copy-code")) {
      const pre = t.closest(".upstage-code").querySelector("pre");
      const ok = await writeClipboard(codeText(pre));
      t.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => { t.textContent = "Copy"; }, 1500);
    } else if (t.closest(".upstage-copy-answer")) {
      const turn = t.closest(".upstage-turn");
      const fallback = turn.querySelector(".upstage-answer-body").innerText;
      let text = fallback;
      if (!dead) {
        const id = ++seq;
        text = await new Promise((resolve) => {
          const timer = setTimeout(() => { copyWaiters.delete(id); resolve(fallback); }, 2000);
          copyWaiters.set(id, (v) => { clearTimeout(timer); resolve(v || fallback); });
          model.send({ type: "copy", id, turn: Number(turn.dataset.id) });
        });
      }
      const ok = await writeClipboard(text);
      t.textContent = ok ? "Copied" : "Copy failed";
      setTimeout(() => { t.textContent = "Copy answer"; }, 1500);
    } else if (t.closest(".upstage-retry-turn")) {
      stick = true;
      model.send({ type: "retry" });
      input.focus();
    }
  });

  // ------------------------------------------------------------------ model events
  const handlers = [
    ["change:transcript change:hidden_turns change:shared", renderTranscript],
    ["change:transcript change:hidden_turns", renderBusy],
    ["change:queued", renderQueue],
    ["change:undo_turns", renderUndo],
    ["change:settings", renderHeader],
    ["change:side_open", renderSide],
    ["change:live", renderLive],
    ["change:status change:busy", renderStatus],
    ["change:busy", renderBusy],
    ["change:notice", renderNotice],
    ["change:settings", renderSettings],
    ["change:models", renderModels],
    ["change:last_error", renderFix],
  ];
  for (const [ev, fn] of handlers) model.on(ev, fn);
  // ipywidgets marks models whose comm died (kernel restart/shutdown): check at once.
  const onCommLive = () => ping(() => setDead(DEAD_TEXT));
  model.on("comm_live_update", onCommLive);

  renderTranscript(); renderLive(); renderStatus(); renderBusy(); renderNotice(); renderSettings(); renderModels();
  renderQueue(); renderUndo(); renderHeader(); renderSide();
  // A saved notebook reopened without its kernel says so; the reply to this hello also brings
  // the live answer in full when one is streaming (a page opened mid-answer).
  ping(() => setDead(DEAD_TEXT));

  return () => {
    for (const [ev, fn] of handlers) model.off(ev, fn);
    model.off("msg:custom", onMsg);
    model.off("comm_live_update", onCommLive);
    for (const p of pending.values()) clearTimeout(p.timer);
    if (resizer) resizer.disconnect();
  };
}

export default { initialize, render };
