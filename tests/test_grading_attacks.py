"""The grader under attack (issue 16): each submission below is the released chapter-02 student
notebook, every stub left in, plus one attack. Each must score 0, and the grader must go on to
grade the rest of the batch correctly (an honest submission graded afterwards scores full marks,
and rows already written stay as they were).

The fairness half: honest answers written in ways the grader used to miss score full marks.
"""

from __future__ import annotations

import csv
import os
import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

from minigpt.assignments import append_row, grade, release  # noqa: E402
from minigpt.assignments.gradefile import check_grade_file  # noqa: E402
from minigpt.assignments.markers import AssignmentError, cell_source, find_exercises  # noqa: E402
from minigpt.assignments.sandbox import bwrap_status  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CH02 = NOTEBOOKS / "02_attention.ipynb"
PKG = Path(__file__).resolve().parents[1] / "minigpt"
SANDBOX = bwrap_status()[0] is not None


def _released(tmp_path: Path):
    (out,) = release([CH02], tmp_path / "release")
    return nbformat.read(out, as_version=4)


def _with_cell(tmp_path: Path, code: str, name: str, *, replace: str | None = None, meta=None) -> Path:
    """The student version with ``code`` in a new cell before the first exercise (or as the body
    of exercise ``replace``, header kept)."""
    nb = _released(tmp_path)
    exercises = find_exercises(nb.cells)
    if replace:
        cell = nb.cells[next(e.cell for e in exercises if e.id == replace)]
        cell.source = cell_source(cell).splitlines()[0] + "\n" + code
    else:
        nb.cells.insert(exercises[0].cell, nbformat.v4.new_code_cell(code))
    if meta is not None:
        nb.metadata["minigpt"]["assignment"]["source"] = meta
    path = tmp_path / "submitted" / name / "02_attention.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


# Each attack: (name, code, exercise whose body it replaces or None for a new cell, metadata source)
ATTACKS = {
    # 1. a cell that ignores SIGINT and loops: every later request would time out
    "timeout_ignoring_sigint": ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
                                "02.1"),
    # 2. the verdict in the student's kernel: replace checks, the traceback display, the input
    #    transformers, hidden_inputs
    "replace_checks": ("import minigpt.checks as mc, minigpt.checks.ch02 as c2\n"
                       "for n in dir(c2):\n    if n.startswith('check_'):\n        setattr(c2, n, lambda *a, **k: None)\n"
                       "mc.fail = lambda *a, **k: None\nmc.CheckFailed = type('X', (Exception,), {})", None),
    "silence_tracebacks": ("ip = get_ipython()\nip.showtraceback = lambda *a, **k: None\n"
                           "ip.showsyntaxerror = lambda *a, **k: None\nimport sys\nsys.excepthook = lambda *a: None", None),
    "input_transformer": ("get_ipython().input_transformers_post.append(lambda lines: ['pass\\n'])", None),
    "noop_hidden_inputs": ("import contextlib, minigpt.checks as mc\nmc.hidden_inputs = lambda *a, **k: contextlib.nullcontext()\n"
                           "mc._hidden['offset'] = 0", None),
    # 4. reading the answers: the solution notebooks (next to the package, or by absolute path)
    "read_solutions": (
        "import json, glob, os, re\nsrcs = []\n"
        f"for pat in ['../notebooks/02_attention.ipynb', '{CH02}', '/work/*/notebooks/02_attention.ipynb',\n"
        "            '../../notebooks/02_attention.ipynb', '/grading/*/02_attention.ipynb', '/**/02_attention.ipynb']:\n"
        "    for f in glob.glob(pat):\n"
        "        try:\n            srcs.append(open(f).read())\n        except OSError:\n            pass\n"
        "for s in srcs:\n    for c in json.loads(s)['cells']:\n        t = ''.join(c['source'])\n"
        "        if t.startswith('# Exercise') and 'BEGIN SOLUTION' in t:\n"
        "            exec(t.split('ch02.check')[0].replace('### BEGIN SOLUTION', '').replace('### END SOLUTION', ''))", None),
    # 5. no isolation: write into the package, a process that outlives the worker, kill the grader
    "write_package": (f"for p in ['{PKG}/checks/ch02.py', '/grading/lib/minigpt/checks/ch02.py']:\n"
                      "    try:\n        open(p, 'a').write('\\ncheck_attention = check_causal_mask = check_split_heads = "
                      "check_multi_head = lambda *a, **k: None\\n')\n    except OSError:\n        pass", None),
    "outlive_worker": ("import subprocess, os\n"
                       "subprocess.Popen(['/bin/sh', '-c', 'sleep 4; echo hacked > /tmp/minigpt_attack_marker; "
                       "echo hacked >> GRADES'], start_new_session=True)\n"
                       "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time; time.sleep(4)\n"
                       "        open('/tmp/minigpt_attack_marker2', 'w').write('x')\n    os._exit(0)", None),
    "kill_the_grader": ("import os, signal\nfor pid in (os.getppid(), -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
                        "    except OSError:\n        pass", None),
    "exhaust_memory": ("x = bytearray(64 << 30)", None),
}


def _need_sandbox() -> None:
    """Without bubblewrap a submission runs with the grader's own rights (the grade output says so):
    an attack that writes into the package or kills every process of the user would do real
    damage here. MINIGPT_REQUIRE_SANDBOX=1 (set by .ci/run) makes that a failure, not a skip."""
    if not SANDBOX:
        why = f"bubblewrap does not work here ({bwrap_status()[1]}); apt-get install -y bubblewrap"
        if os.environ.get("MINIGPT_REQUIRE_SANDBOX"):
            pytest.fail(why)
        pytest.skip(why)


class TestAttacks:  # one class, so pytest-xdist --dist loadscope keeps the batch together
    def test_every_attack_scores_zero_and_the_batch_goes_on(self, tmp_path):
        _need_sandbox()
        grades = tmp_path / "grades.csv"
        subs = {}
        for name, (code, where) in ATTACKS.items():
            code = code.replace("GRADES", str(grades))
            subs[name] = _with_cell(tmp_path, code, name, replace=where)
        # 3. the submission chooses its own answer key: metadata naming a path
        subs["own_answer_key"] = _with_cell(tmp_path, "pass", "own_answer_key", meta=str(tmp_path / "submitted"))
        subs["release_as_key"] = _with_cell(tmp_path, "pass", "release_as_key", meta="../release/02_attention.ipynb")
        shutil.copy(subs["own_answer_key"], tmp_path / "submitted" / "own_answer_key" / "key.ipynb")
        honest = tmp_path / "submitted" / "honest" / "02_attention.ipynb"
        honest.parent.mkdir(parents=True)
        shutil.copy(CH02, honest)
        for marker in ("/tmp/minigpt_attack_marker", "/tmp/minigpt_attack_marker2"):
            Path(marker).unlink(missing_ok=True)
        pkg_before = {p: p.read_bytes() for p in (PKG / "checks").glob("*.py")}

        reports = {}
        for name, sub in [*subs.items(), ("honest", honest)]:
            rep = grade(sub, timeout=6, total_timeout=90, source_dir=NOTEBOOKS)
            append_row(rep, grades)
            reports[name] = rep
        time.sleep(5)  # longer than the detached processes wait

        for name, rep in reports.items():
            if name == "honest":
                assert rep.total == rep.max_points == _n_exercises(), rep.table()
            else:
                assert rep.total == 0, f"{name}:\n{rep.table()}"
                assert Path(rep.source) == CH02, name  # the answer key is the instructor's
        assert {p: p.read_bytes() for p in (PKG / "checks").glob("*.py")} == pkg_before
        assert not Path("/tmp/minigpt_attack_marker2").exists()
        rows = list(csv.DictReader(grades.open()))
        assert [r["total"] for r in rows] == ["0"] * (len(rows) - 1) + [str(_n_exercises())]
        assert len(rows) == len(subs) + 1 and "hacked" not in grades.read_text()
        timeout = reports["timeout_ignoring_sigint"].results[0]
        assert timeout.status == "timeout" and timeout.points == 0, reports["timeout_ignoring_sigint"].table()
        assert not Path("/tmp/minigpt_attack_marker").exists()
        assert all(r.sandbox.startswith("bubblewrap") for r in reports.values())

    def test_calling_the_package_reference_is_not_the_students_work(self, tmp_path):
        body = ("from minigpt.attention import attention as ref\n"
                "import minigpt\n"
                "def my_attention(q, k, v, mask=None):\n    return ref(q, k, v, mask)\n"
                "def my_causal_mask(T):\n    return getattr(minigpt.attention, 'causal' + '_mask')(T)")
        sub = _with_cell(tmp_path, body, "uses_reference", replace="02.1")
        nb = nbformat.read(sub, as_version=4)
        rep = grade(sub, timeout=20, source_dir=NOTEBOOKS)
        assert rep.total == 0, rep.table()
        assert "minigpt.attention" in rep.results[0].message and "by hand" in rep.results[0].message, rep.table()
        assert nb  # the notebook is unchanged on disk


def test_without_bwrap_the_grade_says_so(tmp_path, monkeypatch):
    from minigpt.assignments import sandbox

    nb = _released(tmp_path)
    path = tmp_path / "stub.ipynb"
    nbformat.write(nb, path)
    rep = grade(path, CH02, timeout=30, sandbox=False)
    assert rep.total == 0 and rep.sandbox.startswith("NONE"), rep.table()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.bwrap_status.cache_clear()
    try:
        assert sandbox.bwrap_status()[0] is None and "not installed" in sandbox.sandbox_description()
        assert sandbox.sandbox_description().startswith("NONE")
    finally:
        sandbox.bwrap_status.cache_clear()


def test_a_csv_of_another_chapter_is_refused_before_grading(tmp_path):
    grades = tmp_path / "grades.csv"
    grades.write_text("submission,notebook,total,max,03.1,03.2\nx,03_ffn_and_block.ipynb,1,2,1,0\n")
    with pytest.raises(AssignmentError, match="one CSV file per chapter"):
        check_grade_file(grades, CH02)
    from minigpt.assignments.__main__ import main

    stub = tmp_path / "s.ipynb"
    nbformat.write(_released(tmp_path), stub)
    assert main(["grade", str(stub), "--csv", str(grades)]) == 2
    assert grades.read_text().count("\n") == 2  # untouched


@pytest.mark.skipif(os.geteuid() != 0 or not SANDBOX, reason="needs root and bubblewrap to check the uid drop")
def test_the_worker_runs_as_nobody_and_sees_no_solutions():
    from minigpt.assignments.sandbox import Limits, Worker

    with Worker(Limits(timeout=60)) as w:
        assert w.request(op="run", code="import os\nassert os.getuid() == 65534")["ok"]
        r = w.request(op="run", code=f"open({str(CH02)!r})")
        assert r["ename"] in ("FileNotFoundError", "PermissionError")
        assert w.request(op="run", code="import os\nassert not os.path.exists('/grading/notebooks')")["ok"]
        r = w.request(op="run", code="import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)")
        assert not r["ok"]


def _solution_body(ex_id: str) -> str:
    """The reference answer of an exercise, markers removed, header and checks kept."""
    nb = nbformat.read(CH02, as_version=4)
    (ex,) = [e for e in find_exercises(nb.cells) if e.id == ex_id]
    text = cell_source(nb.cells[ex.cell]).split("### BEGIN HIDDEN TESTS")[0]
    return "\n".join(ln for ln in text.splitlines() if "### " not in ln)


def _n_exercises() -> int:
    """How many exercises chapter 02 has (each worth one point)."""
    return len(find_exercises(nbformat.read(CH02, as_version=4).cells))


def test_honest_answers_in_unusual_places_score_full_marks(tmp_path):
    nb = _released(tmp_path)
    cells = {e.id: nb.cells[e.cell] for e in find_exercises(nb.cells)}
    # 02.1: the stub left untouched, the answer in a new cell below it (no header)
    below = nbformat.v4.new_code_cell(_solution_body("02.1").split("\n", 1)[1])
    nb.cells.insert(nb.cells.index(cells["02.1"]) + 1, below)
    # 02.2: the header after an import; 02.3: after a cell magic; 02.4: "Exercise 2.4"
    cells["02.2"].source = "import math\n" + _solution_body("02.2")
    cells["02.3"].source = "%%time\n" + _solution_body("02.3")
    cells["02.4"].source = _solution_body("02.4").replace("# Exercise 02.4:", "# Exercise 2.4:")
    for later in sorted(cells)[4:]:  # exercises added after these four: answered as written
        cells[later].source = _solution_body(later)
    path = tmp_path / "fair.ipynb"
    nbformat.write(nb, path)
    rep = grade(path, timeout=60)
    assert rep.total == rep.max_points == _n_exercises(), rep.table()
    assert [r.cases for r in rep.results] == [2] * _n_exercises()


def test_partial_credit_and_all_or_nothing(tmp_path):
    from minigpt.assignments.grade import GradeReport

    nb = _released(tmp_path)
    cells = {e.id: nb.cells[e.cell] for e in find_exercises(nb.cells)}
    # right for the first hidden run of the check (it asks for four masks), wrong after: one of
    # the two cases passes
    cells["02.2"].source = ("# Exercise 02.2: the causal mask\n"
                            "calls = []\n"
                            "def my_causal_mask(t_q, t_k=None):\n"
                            "    calls.append(t_q)\n"
                            "    t_k = t_k or t_q\n"
                            "    good = torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)\n"
                            "    return good if len(calls) <= 4 else ~good")
    path = tmp_path / "partial.ipynb"
    nbformat.write(nb, path)
    rep = grade(path, CH02, timeout=60, draws=2)
    r = rep.results[1]
    assert (r.status, r.cases_passed, r.cases, r.points) == ("partial", 1, 2, 0.5), rep.table()
    strict = grade(path, CH02, timeout=60, draws=2, all_or_nothing=True)
    assert strict.results[1].points == 0
    fb = rep.feedback()
    assert "1 of 2 test cases passed" in fb and "| 02.2" in fb and "hidden_inputs" not in fb
    assert isinstance(rep, GradeReport)


def test_a_failed_check_shows_one_line_in_the_notebook():
    """Issue 15: the message, not a ~25-line traceback into minigpt/checks (with other hints)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import torch\nfrom minigpt.checks import ch02\nch02.check_causal_mask(lambda T: torch.ones(T, T, dtype=torch.bool))")])
    env = {**os.environ, "PYTHONPATH": str(PKG.parent)}
    NotebookClient(nb, timeout=120, allow_errors=True).execute(env=env)
    (out,) = nb.cells[0].outputs
    assert out.output_type == "error" and out.ename == "CheckFailed"
    assert out.traceback == [f"CheckFailed: {out.evalue}"] and "allows everything" in out.evalue


def test_nbgrader_export_embeds_images_and_keeps_hints_outside_the_solution(tmp_path):
    from minigpt.assignments.release import export_nbgrader

    (out,) = export_nbgrader([NOTEBOOKS / "07_sampling.ipynb"], tmp_path)
    nb = nbformat.read(out, as_version=4)
    md = [c for c in nb.cells if c.cell_type == "markdown"]
    assert "../assets" not in "".join(cell_source(c) for c in md)
    assert any("kv_cache.png" in c.get("attachments", {}) for c in md)
    for c in nb.cells:
        if "nbgrader" in c.metadata and c.metadata.nbgrader["solution"]:
            text = cell_source(c)
            region = text.split("### BEGIN SOLUTION")[1].split("### END SOLUTION")[0]
            assert "# Hint:" in text.split("### BEGIN SOLUTION")[0] and "# Hint:" not in region, text


def test_forbidden_names_are_found_through_aliases_and_re_exports():
    from minigpt.assignments.forbidden import forbidden_uses

    names = ("minigpt.attention.attention", "torch.nn.functional.scaled_dot_product_attention",
             "minigpt.model.GPT.__init__")
    sdpa = "torch.nn.functional.scaled_dot_product_attention"
    assert forbidden_uses("from minigpt.attention import attention as a\ny = a(q, k, v)", names) == [names[0]]
    assert forbidden_uses("import minigpt.attention as A\nA.attention(q, k, v)", names) == [names[0]]
    assert forbidden_uses("import minigpt\nminigpt.attention.attention(q, k, v)", names) == [names[0]]
    assert forbidden_uses("import torch.nn.functional as F\nF.scaled_dot_product_attention(q, k, v)", names) == [sdpa]
    assert forbidden_uses("from minigpt import GPT\nm = GPT(cfg)", names) == [names[2]]
    assert forbidden_uses("%%time\nimport torch\ndef attention(q, k, v):\n    return torch.softmax(q @ k.mT, -1) @ v",
                          names) == []
