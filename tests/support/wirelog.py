"""What a browser page receives from and sends to its kernels, for diagnosing stalls.

``WireLog(page)`` records every kernel websocket frame (JupyterLab 4's binary
``v1.kernel.websocket.jupyter.org`` frames and plain JSON ones) as one line: time, direction,
channel, msg_type, msg_id and parent msg_id (the cell's execute request), plus comm method,
and every console message of the page. ``dump(path)`` writes them out.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any


def decode_frame(payload: str | bytes) -> dict[str, Any]:
    """channel / msg_type / msg_id / parent id / comm method of one kernel websocket frame."""
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            channel = msg.get("channel", "")
            header, parent, content = msg.get("header", {}), msg.get("parent_header", {}), msg.get("content", {})
        else:
            (n,) = struct.unpack_from("<Q", payload, 0)
            offsets = list(struct.unpack_from(f"<{n}Q", payload, 8))
            parts = [payload[offsets[i]:offsets[i + 1]] for i in range(min(len(offsets) - 1, 5))]
            channel = parts[0].decode()
            header, parent = json.loads(parts[1]), json.loads(parts[2])
            content = json.loads(parts[4]) if len(parts) > 4 else {}
    except Exception as exc:  # noqa: BLE001 - a diagnostic: keep going
        return {"undecoded": f"{type(exc).__name__}: {exc}"[:200], "size": len(payload)}
    out = {"ch": channel, "type": header.get("msg_type"), "id": str(header.get("msg_id", ""))[-12:],
           "parent": str(parent.get("msg_id", ""))[-12:], "size": len(payload)}
    if header.get("subshell_id"):
        out["subshell"] = str(header["subshell_id"])[-8:]
    data = content.get("data") if isinstance(content, dict) else None
    if isinstance(data, dict) and "method" in data:
        out["method"] = data["method"]
        inner = data.get("content")
        if isinstance(inner, dict) and "type" in inner:
            out["custom"] = inner["type"]
    if isinstance(content, dict) and "execution_state" in content:
        out["state"] = content["execution_state"]
    if isinstance(content, dict) and "comm_id" in content:
        out["comm"] = str(content["comm_id"])[-8:]
    return out


class WireLog:
    def __init__(self, page: Any) -> None:
        self.lines: list[str] = []
        self.t0 = time.monotonic()
        page.on("websocket", self._on_ws)
        page.on("console", lambda m: self._add({"console": m.type, "text": m.text[:500]}))
        page.on("pageerror", lambda e: self._add({"pageerror": str(e)[:500]}))

    def _add(self, entry: dict[str, Any]) -> None:
        self.lines.append(json.dumps({"t": round(time.monotonic() - self.t0, 3), **entry}))

    def _on_ws(self, ws: Any) -> None:
        if "/api/kernels/" not in ws.url:
            return
        self._add({"ws": "open", "url": ws.url.split("?")[0][-60:]})
        ws.on("framereceived", lambda p: self._add({"dir": "in", **decode_frame(p)}))
        ws.on("framesent", lambda p: self._add({"dir": "out", **decode_frame(p)}))
        ws.on("close", lambda _ws: self._add({"ws": "close"}))

    def mark(self, text: str) -> None:
        self._add({"mark": text})

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(self.lines) + "\n")
