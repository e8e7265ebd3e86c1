"""The error block: the sentence, the hint with `code`, transport internals collapsed."""
from __future__ import annotations

from upstage_magic.errors import APIConnectionError, ModelNotFoundError
from upstage_magic.notebook.errorview import error_bundle, first_line, split_detail


def test_transport_detail_leaves_the_first_line():
    e = APIConnectionError("Could not connect to the Upstage API (Cannot connect to host h:1 ssl:default "
                           "[Connect call failed ('127.0.0.1', 1)]).")
    assert first_line(e).startswith("Could not connect to the Upstage API. Check your network")
    assert "ssl:default" not in first_line(e)
    b = error_bundle(e)
    assert "<details><summary>Details</summary><pre>Cannot connect to host h:1 ssl:default" in b["text/html"]
    assert b["text/plain"].splitlines()[0] == "APIConnectionError: Could not connect to the Upstage API."


def test_backticks_become_code_and_short_parentheticals_stay():
    e = ModelNotFoundError("Model 'x' not found (HTTP 404).", status=404, hint="Run `%upstage models` to see <yours>.")
    assert split_detail(e.message) == ("Model 'x' not found (HTTP 404).", "")
    page = error_bundle(e)["text/html"]
    assert "<code>%upstage models</code>" in page and "&lt;yours&gt;" in page and "`" not in page
