"""The building blocks of issue 12 in real ipykernels (before the magic wires them in).

Errors recorded from real cells (IPython's ``/tmp/ipykernel_*/N.py`` cell files and labels),
``{Err[N]}``, the fix prompt without the key, and the log across a kernel restart and two
kernels appending at once.
"""
from __future__ import annotations

import json

import pytest

from tests.support.harness import KernelSession

pytestmark = pytest.mark.kernel

CANARY = "up_" + "Kc4" * 10  # a key-shaped secret, built at run time


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("upstage-home")


def start(home, notebook: str = "work/analysis.ipynb") -> KernelSession:
    k = KernelSession({"UPSTAGE_API_KEY": CANARY, "UPSTAGE_MAGIC_HOME": str(home),
                       "JPY_SESSION_NAME": notebook})
    k.run("from upstage_magic.notebook.fix import install_error_recorder\n"
          "ERRORS = install_error_recorder(get_ipython())")
    return k


@pytest.fixture(scope="module")
def kernel(home):
    k = start(home)
    try:
        yield k
    finally:
        k.close()


def previous_cell(k: KernelSession) -> int:
    """The number of the cell run before this helper (``In`` holds every cell, 0 is empty)."""
    return int(k.run("print(len(In) - 2)").strip())


def test_fix_prompt_from_a_real_error_in_a_library(kernel):
    kernel.run("import pandas as pd\n"
               "def pick(df):\n"
               "    return df['missing']")
    defined_in = previous_cell(kernel)
    bad = kernel.execute(f"secret = {CANARY!r}\npick(pd.DataFrame({{'a': [1]}}))")
    assert bad.error is not None and bad.error["ename"] == "KeyError"  # IPython still reports it
    failed = previous_cell(kernel)
    assert kernel.run('print(ERRORS.last().execution_count)').strip() == str(failed)
    prompt = kernel.json("import json\nfrom upstage_magic.notebook.fix import build_fix_prompt\n"
                         "print(json.dumps(build_fix_prompt(ERRORS.last())))")
    assert f"Cell In[{failed}], line 2, in <module>" in prompt
    assert f"Cell In[{defined_in}], line 3, in pick" in prompt and "return df['missing']" in prompt
    assert "frames in pandas omitted]" in prompt
    assert "Error: KeyError: 'missing'" in prompt
    assert "pick(pd.DataFrame({'a': [1]}))" in prompt  # the cell's source
    assert "ipykernel_" not in prompt  # cell files are shown by their In[N] label
    assert CANARY not in prompt  # the key was in the cell: masked


def test_err_placeholder_in_a_kernel(kernel):
    kernel.execute("1 / 0")
    n = previous_cell(kernel)
    text = kernel.json("import json\nfrom upstage_magic.placeholders import fill\n"
                       f"r = fill('Why {{Err[{n}]}}? {{In[{n}]}}', get_ipython().user_ns, errors=ERRORS)\n"
                       "print(json.dumps(r.text))")
    assert "ZeroDivisionError: division by zero" in text and text.endswith("? 1 / 0")
    assert "Err" not in kernel.json("import json; print(json.dumps(sorted(get_ipython().user_ns)))")


APPEND = (
    "from upstage_magic.log import ConversationLog, default_log_path, current_notebook\n"
    "LOG = ConversationLog(default_log_path())\n"
    "cid = {cid}\n"
    "for i in range(200):\n"
    "    LOG.append(cid, {{'prompt': '{tag} %d' % i, 'answer': 'a' * 300, 'usage': {{'total_tokens': 2}}}})\n"
)


def test_log_survives_a_restart_and_two_kernels_lose_nothing(kernel, home):
    cid = int(kernel.run(
        "from upstage_magic.log import ConversationLog, default_log_path, current_notebook\n"
        "LOG = ConversationLog(default_log_path())\n"
        "cid = LOG.new_conversation(current_notebook())\n"
        f"LOG.append(cid, {{'prompt': 'my key is {CANARY}', 'answer': 'noted'}})\n"
        "print(cid)").strip())
    kernel.km.restart_kernel(now=True)
    kernel.kc.wait_for_ready(timeout=120)
    got = kernel.json(
        "import json\nfrom upstage_magic.log import ConversationLog, default_log_path, current_notebook\n"
        "LOG = ConversationLog(default_log_path())\n"
        "cid = LOG.latest(current_notebook())\n"
        "print(json.dumps([cid, LOG.load(cid)]))")
    assert got[0] == cid and got[1][0]["prompt"] == "my key is ***"
    for f in home.iterdir():
        assert CANARY.encode() not in f.read_bytes()

    other = start(home, notebook="work/other.ipynb")
    try:
        ids = [kernel.submit(APPEND.format(cid=cid, tag="A")), other.submit(APPEND.format(cid=cid, tag="B"))]
        for k, msg_id in zip((kernel, other), ids, strict=False):
            msgs = k.collect(msg_id, timeout=120)
            assert not [m for m in msgs if m["msg_type"] == "error"], msgs
    finally:
        other.close()
    turns = kernel.json("import json\nprint(json.dumps([t['prompt'] for t in LOG.load(cid)]))")
    assert len(turns) == 401
    for tag in "AB":
        assert [int(p.split()[1]) for p in turns if p.startswith(tag + " ")] == list(range(200))
    summary = json.loads(kernel.run("import json, dataclasses\n"
                                    "print(json.dumps(dataclasses.asdict(LOG.recent(limit=1)[0])))"))
    assert summary["turns"] == 401 and summary["notebook"] == "work/analysis.ipynb"
