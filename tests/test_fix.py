"""%upstage fix: error records from real exceptions, user frames only, bounded, no secrets."""
from __future__ import annotations

import gc
import json
import linecache
import weakref

import pytest
from IPython.core.interactiveshell import InteractiveShell

from upstage_magic.notebook.fix import (
    FIX_INSTRUCTION,
    ErrorLog,
    build_fix_prompt,
    format_traceback,
    install_error_recorder,
    is_user_frame,
    record_exception,
    record_last_exception,
    uninstall_error_recorder,
)

CELL_FILE = "<ipython-input-3-0123456789ab>"
KERNEL_CELL_FILE = "/tmp/ipykernel_4242/1234567890.py"
LIB_FILE = "/opt/py/lib/python3.11/site-packages/fakelib/core.py"


def _compile(source: str, filename: str) -> dict:
    """Run ``source`` as if it lived in ``filename`` (lines visible to tracebacks)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    ns: dict = {}
    exec(compile(source, filename, "exec"), ns)  # noqa: S102 - test code we wrote
    return ns


LIB = _compile(
    "def parse(text):\n"
    "    return _inner(text)\n"
    "def _inner(text):\n"
    "    raise ValueError(f'cannot parse {text!r}')\n",
    LIB_FILE,
)
CELL_SOURCE = "def load(t):\n    return parse(t)\n\nresult = load('oops')\n"


def _cell_error(filename: str = CELL_FILE, source: str = CELL_SOURCE) -> BaseException:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    code = compile(source, filename, "exec")
    try:
        exec(code, {"parse": LIB["parse"]})  # noqa: S102
    except Exception as exc:  # noqa: BLE001
        return exc
    raise AssertionError("the cell did not raise")


def test_frames_are_classified():
    assert is_user_frame(CELL_FILE)
    assert is_user_frame(KERNEL_CELL_FILE)
    assert is_user_frame("/home/me/project/helpers.py")
    assert not is_user_frame(LIB_FILE)
    assert not is_user_frame("/usr/lib/python3/dist-packages/x.py")
    assert not is_user_frame(json.__file__)  # the standard library
    assert not is_user_frame("<frozen importlib._bootstrap>")


@pytest.mark.parametrize("filename", [CELL_FILE, KERNEL_CELL_FILE])
def test_traceback_keeps_cell_frames_and_counts_library_frames(filename):
    record = record_exception(_cell_error(filename), execution_count=3, source=CELL_SOURCE)
    text = format_traceback(record)
    assert "return parse(t)" in text and "result = load('oops')" in text
    assert "[2 frames in fakelib omitted]" in text
    assert "_inner" not in text and LIB_FILE not in text
    assert text.rstrip().endswith("ValueError: cannot parse 'oops'")
    assert record.type == "ValueError" and record.message == "cannot parse 'oops'"


def test_an_error_from_a_real_library_frame():
    try:
        json.loads("{not json")
    except ValueError as exc:
        record = record_exception(exc, execution_count=5, source='json.loads("{not json")')
    text = format_traceback(record)
    assert "json.decoder.JSONDecodeError" == record.type
    assert "frames in python omitted" in text  # json's own frames
    assert "json.loads(\"{not json\")" in text  # this test's frame is "user" code


def test_fix_prompt_holds_instruction_error_traceback_and_cell():
    record = record_exception(_cell_error(), execution_count=3, source=CELL_SOURCE)
    prompt = build_fix_prompt(record)
    assert prompt.startswith(FIX_INSTRUCTION)
    assert "Error: ValueError: cannot parse 'oops'" in prompt
    assert "The cell (In[3]):\n```python\n" + CELL_SOURCE.strip("\n") + "\n```" in prompt
    assert "```python" in FIX_INSTRUCTION  # asks for one fenced python block


def test_cell_with_backticks_gets_a_longer_fence():
    src = 'doc = """```py\nx\n```"""\n1/0'
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError as exc:
        record = record_exception(exc, source=src)
    prompt = build_fix_prompt(record)
    assert "````python\n" + src + "\n````" in prompt
    assert "The cell (the cell):" in prompt  # no execution count known


def test_long_tracebacks_and_sources_are_cut_in_the_middle():
    src = "def f(n):\n    return f(n + 1)\nf(0)\n" + "# filler\n" * 5000
    try:
        _compile(src, "<ipython-input-9-deadbeef0000>")
    except RecursionError as exc:
        record = record_exception(exc, execution_count=9, source=src)
    tb = format_traceback(record)
    assert len(tb) <= 4000
    assert "characters cut] …" in tb
    assert tb.rstrip().endswith("maximum recursion depth exceeded")
    prompt = build_fix_prompt(record, max_source_chars=2000)
    assert len(prompt) < 4000 + 2000 + 1000
    assert "f(0)" in prompt  # the start of the cell survives the cut


def test_chained_exceptions_are_named():
    try:
        try:
            {}["k"]
        except KeyError as inner:
            raise RuntimeError("lookup failed") from inner
    except RuntimeError as exc:
        record = record_exception(exc)
    text = format_traceback(record)
    assert text.index("KeyError: 'k'") < text.index("direct cause") < text.index("RuntimeError: lookup failed")


def test_a_cause_identical_to_the_error_is_not_repeated():
    try:
        try:
            {}["k"]
        except KeyError as inner:
            raise KeyError("k") from inner
    except KeyError as exc:
        record = record_exception(exc)
    assert record.chain == ()
    assert format_traceback(record).count("KeyError: 'k'") == 1


def test_the_api_key_never_reaches_the_fix_prompt(monkeypatch):
    key = "up_" + "Zq7" * 10  # built at run time: no key-shaped literal in the repository
    monkeypatch.setenv("UPSTAGE_API_KEY", key)
    src = f"api_key = {key!r}\nraise PermissionError('bad key ' + api_key)\n"
    try:
        _compile(src, "<ipython-input-4-feedfeed0000>")
    except PermissionError as exc:
        record = record_exception(exc, execution_count=4, source=src)
    prompt = build_fix_prompt(record)
    assert key not in prompt and key not in str(record) and key not in record.message
    assert "***" in prompt


def test_a_record_keeps_no_frames_alive():
    class Big:
        pass

    def fail():
        big = Big()
        ref = weakref.ref(big)
        refs.append(ref)
        raise ValueError("x")

    refs: list = []
    try:
        fail()
    except ValueError as exc:
        record = record_exception(exc)
    gc.collect()
    assert refs[0]() is None
    assert record.frames[-1].name == "fail"


# -- the recorder in a real shell ------------------------------------------------------


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    log = install_error_recorder(ip, maxlen=3)
    yield ip, log
    uninstall_error_recorder(ip)


def test_recorder_keeps_errors_by_execution_count_and_ipython_still_reports(shell):
    ip, log = shell
    ok = ip.run_cell("x = 1", store_history=True)
    bad = ip.run_cell("def g():\n    return 1 / 0\ng()", store_history=True)
    assert bad.error_in_exec is not None  # IPython's own handling is untouched
    assert ok.execution_count not in log
    record = log[bad.execution_count]
    assert record.type == "ZeroDivisionError"
    assert record.source == "def g():\n    return 1 / 0\ng()"
    assert log.last() is record and log[-1] is record
    tb = format_traceback(record)
    assert f"Cell In[{bad.execution_count}], line 2, in g" in tb
    assert "interactiveshell" not in tb


def test_recorder_is_bounded_idempotent_and_skips_interrupts_and_own_cells(shell):
    ip, log = shell
    assert install_error_recorder(ip) is log
    counts = [ip.run_cell(f"raise ValueError({n})", store_history=True).execution_count for n in range(5)]
    assert sorted(log) == counts[-3:]
    ip.run_cell("raise KeyboardInterrupt", store_history=True)
    assert log.last().message == "4"
    syntax = ip.run_cell("x = (", store_history=True)
    assert log[syntax.execution_count].type == "SyntaxError"
    own = ErrorLog()
    try:
        raise RuntimeError("from the magic")
    except RuntimeError as exc:
        own.add(record_exception(exc, execution_count=1, source="%%upstage fix\n"))
    assert own.last() is None and own.last(skip_magic=False) is not None


def test_an_error_from_before_the_recorder_is_found_through_sys(monkeypatch):
    ip = InteractiveShell.instance()
    uninstall_error_recorder(ip)
    monkeypatch.delattr("sys.last_exc", raising=False)
    monkeypatch.delattr("sys.last_value", raising=False)
    assert record_last_exception(ip) is None
    ip.run_cell("def h():\n    raise LookupError('earlier')\nh()", store_history=True)
    record = record_last_exception(ip)
    assert record is not None and record.summary == "LookupError: earlier"
    assert "in h\n    raise LookupError('earlier')" in format_traceback(record)


def test_uninstall_stops_recording():
    ip = InteractiveShell.instance()
    log = install_error_recorder(ip)
    uninstall_error_recorder(ip)
    n = ip.run_cell("raise ValueError('after')", store_history=True).execution_count
    assert n not in log
