"""Classroom assignments: markers, release, dependency slicing and autograding round trips.

The round trips execute notebooks in fresh kernels (a few seconds each: the grader runs only
the cells the exercises need): for every chapter the solutions score full marks, the released
stubs score zero, and one planted mistake costs exactly the exercise it is in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")

from minigpt.assignments import AssignmentError, find_exercises, grade, release, student_notebook  # noqa: E402
from minigpt.assignments.__main__ import main as cli  # noqa: E402
from minigpt.assignments.deps import cell_names, needed_cells  # noqa: E402
from minigpt.assignments.markers import cell_source, check_suffix, split_hidden, stub_solutions  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# 00b_pytorch_primer holds chapter 00's exercises (00_setup has none), so a letter may follow the number
CHAPTERS = sorted(p for p in NOTEBOOKS.glob("0[0-9]*_*.ipynb") if find_exercises(nbformat.read(p, 4).cells))

# One real mistake per chapter: (exercise, text in the solution, replacement).
PLANTED = {
    "00": ("00.2", "((A[:, None, :] - B[None, :, :]) ** 2).sum(dim=-1)", "((A[:, None, :] - B[None, :, :]) ** 2).sum(dim=-1).sqrt()"),
    "01": ("01.5", "pe[:, 1::2] = torch.cos(angle)", "pe[:, 1::2] = torch.sin(angle)"),
    "02": ("02.1", "scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)", "scores = q @ k.transpose(-2, -1)"),
    "03": ("03.3", "x.pow(2).mean(-1, keepdim=True)", "x.pow(2).sum(-1, keepdim=True)"),
    "04": ("04.2", "return ids[:, :-1], ids[:, 1:]", "return ids, ids"),
    "05": ("05.3", "opt.zero_grad(set_to_none=True)", "pass"),
    "06": ("06.2", "(alpha / r) * (x @ A.T @ B.T)", "alpha * (x @ A.T @ B.T)"),
    "07": ("07.1", "torch.softmax(logits / T, dim=-1)", "torch.softmax(logits, dim=-1) / T"),
    "08": ("08.3", "r = (0.5 * layer + 0.5 * eye) @ r", "r = layer @ r"),
    "09": ("09.3", "2 * cfg.n_layer * cfg.kv_heads", "2 * cfg.n_layer * cfg.n_head"),
}


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _exercise_cell(nb, ex_id: str):
    return next(c for c in nb.cells if c.cell_type == "code" and cell_source(c).startswith(f"# Exercise {ex_id}:"))


def _write(nb, path: Path) -> Path:
    nbformat.write(nb, path)
    return path


# --- markers -------------------------------------------------------------------------------

def test_every_chapter_with_exercises_has_them_marked_and_hidden_tests():
    assert [p.name[:2] for p in CHAPTERS] == [f"{i:02d}" for i in range(0, 10)]
    for path in CHAPTERS:
        nb = _read(path)
        for ex in find_exercises(nb.cells):
            src = cell_source(nb.cells[ex.cell])
            assert ex.id.startswith(path.name[:2]), (path.name, ex.id)
            assert "### BEGIN SOLUTION" in src and "### BEGIN HIDDEN TESTS" in src, (path.name, ex.id)
            assert check_suffix(src).strip(), f"{ex.id}: no visible check after the solution"


def test_stub_keeps_indentation_hints_and_the_rest_of_the_cell():
    src = "# Exercise 09.1: f\ndef f(x):\n    ### BEGIN SOLUTION\n    # Hint: double it\n    return 2 * x\n    ### END SOLUTION\n\ncheck(f)"
    out = stub_solutions(src, "09.1", "f")
    assert "return 2 * x" not in out and "### BEGIN SOLUTION" not in out
    assert "    # Hint: double it" in out and out.endswith("check(f)")
    ns: dict = {"check": lambda f: f(1)}
    with pytest.raises(NotImplementedError, match="Exercise 09.1.*double it"):
        exec(out, ns)


def test_hidden_tests_split_off_and_malformed_markers_are_named():
    src = "a = 1\n### BEGIN HIDDEN TESTS\nassert a == 1\n### END HIDDEN TESTS\nb = 2"
    assert split_hidden(src) == ("a = 1\nb = 2", "assert a == 1")
    with pytest.raises(AssignmentError, match="never closed"):
        split_hidden("### BEGIN HIDDEN TESTS\nx")
    with pytest.raises(AssignmentError, match="without a"):
        stub_solutions("x\n### END SOLUTION", "1.1", "t")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Exercise 01.1: a\n"),
                                         nbformat.v4.new_code_cell("# Exercise 01.1: again\n")])
    with pytest.raises(AssignmentError, match="appears twice"):
        find_exercises(nb.cells)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")])
    with pytest.raises(AssignmentError, match="Exercise NN.M"):
        student_notebook(nb, Path("x.ipynb"))


def test_points_in_the_header():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Exercise 03.2: hard one [3 points]\nx = 1")])
    (ex,) = find_exercises(nb.cells)
    assert (ex.id, ex.title, ex.points) == ("03.2", "hard one", 3.0)


# --- dependency slice ----------------------------------------------------------------------

def test_slice_keeps_what_the_exercise_needs_and_drops_the_rest():
    cells = [
        "import torch\nfrom minigpt import GPT",                # 0 imports: needed (torch)
        "model = GPT.tiny()",                                    # 1 binds model: needed
        "slow = torch.randn(10**4)\nprint(slow.sum())",          # 2 unrelated: dropped
        "model.eval()",                                          # 3 changes model in place: kept
        "_ = plot(slow)",                                        # 4 dropped
        "def f(x):\n    y = x + 1\n    return model(y)",         # 5 exercise: uses model, not x/y
        "f(torch.ones(1))",                                      # 6 required (a test)
    ]
    assert needed_cells(cells, {5, 6}) == {0, 1, 3, 5, 6}
    # a later rebinding ends a name's dependence on earlier cells
    assert needed_cells(["a = slow()", "a = 1", "print(a)"], {2}) == {1, 2}
    assert needed_cells(["a = [0]", "a += [1]", "print(a)"], {2}) == {0, 1, 2}
    # a cell that does not parse is kept (we cannot tell what it does)
    assert needed_cells(["x = (", "print(1)"], {1}) == {0, 1}
    names = cell_names("%matplotlib inline\nfor i in range(3):\n    total = i\nf(lambda z: z + w)")
    assert {"i", "total"} <= names.binds and "w" in names.uses and "z" not in names.uses


# --- release -------------------------------------------------------------------------------

@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
def test_release_removes_solutions_hidden_tests_and_outputs(path, tmp_path):
    (out,) = release([path], tmp_path)
    sol, stu = _read(path), _read(out)
    text = json.dumps(stu.cells)
    assert "### BEGIN" not in text and "### END" not in text and "hidden_inputs" not in text
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in stu.cells if c.cell_type == "code")
    exercises = find_exercises(sol.cells)
    assert [e.id for e in find_exercises(stu.cells)] == [e.id for e in exercises]
    assert stu.metadata["minigpt"]["assignment"]["source"] == path.name
    for ex in exercises:
        stub = cell_source(stu.cells[ex.cell])
        solution = cell_source(sol.cells[ex.cell])
        body = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", solution, re.S)[1]
        code_lines = [ln.strip() for ln in body.splitlines() if ln.strip() and not ln.strip().startswith("#")]
        assert not any(ln in stub.splitlines() for ln in code_lines if len(ln) > 12), ex.id
        assert "raise NotImplementedError" in stub and f"Exercise {ex.id}" in stub
    # the code before the first exercise is unchanged (and nbval runs it without error)
    first = exercises[0].cell
    code = [[cell_source(c) for c in nb.cells[:first] if c.cell_type == "code"] for nb in (stu, sol)]
    assert code[0] == code[1]
    if "`### BEGIN SOLUTION`" in json.dumps([cell_source(c) for c in sol.cells]):  # the instructions say where to write
        assert "in place of `# YOUR CODE HERE`" in json.dumps([cell_source(c) for c in stu.cells])


def test_release_embeds_images_and_refuses_to_overwrite(tmp_path):
    (out,) = release([NOTEBOOKS / "03_ffn_and_block.ipynb"], tmp_path)
    nb = _read(out)
    assert "../assets" not in json.dumps([cell_source(c) for c in nb.cells])
    assert any("gpt_block.png" in c.get("attachments", {}) for c in nb.cells if c.cell_type == "markdown")
    with pytest.raises(AssignmentError, match="overwrite"):
        release([NOTEBOOKS / "03_ffn_and_block.ipynb"], NOTEBOOKS)


def test_release_copies_the_answer_free_files_its_links_need(tmp_path):
    (out,) = release([NOTEBOOKS / "00b_pytorch_primer.ipynb"], tmp_path / "release")
    names = {p.name for p in out.parent.iterdir()}
    # 00b links the setup notebook and the glossary, the glossary the appendix; 01 (linked too) holds answers
    assert names == {out.name, "00_setup.ipynb", "GLOSSARY.md", "A1_scaling_up.ipynb"}, names
    assert (out.parent / "GLOSSARY.md").read_text() == (NOTEBOOKS / "GLOSSARY.md").read_text()
    setup = _read(out.parent / "00_setup.ipynb")
    assert all(not c.get("outputs") for c in setup.cells if c.cell_type == "code")
    assert [cell_source(c) for c in setup.cells] == [cell_source(c) for c in _read(NOTEBOOKS / "00_setup.ipynb").cells]

    # never a file with answers: a notebook with exercises, a text with solution markers
    src = tmp_path / "src"
    src.mkdir()
    link = nbformat.v4.new_markdown_cell("[guide](guide.md) [other](other.ipynb) [free](free.ipynb) [gone](gone.md)")
    _write(nbformat.v4.new_notebook(cells=[link, nbformat.v4.new_code_cell(
        "# Exercise 09.1: f\ndef f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\n\ncheck(f)")]),
        src / "09_x.ipynb")
    (src / "guide.md").write_text("answer key:\n### BEGIN SOLUTION\n")
    _write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# Exercise 10.1: g\nx = 1")]), src / "other.ipynb")
    _write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)", outputs=[
        nbformat.v4.new_output("stream", text="1\n")])]), src / "free.ipynb")
    release([src / "09_x.ipynb"], tmp_path / "out")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"09_x.ipynb", "free.ipynb"}
    assert _read(tmp_path / "out" / "free.ipynb").cells[0].outputs == []


def test_released_notebook_runs_until_the_first_stub_and_fails_there(tmp_path):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    (out,) = release([NOTEBOOKS / "02_attention.ipynb"], tmp_path)
    nb = _read(out)
    first = find_exercises(nb.cells)[0].cell
    client = NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(NOTEBOOKS)}})
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        client.execute(env={"MINIGPT_PROGRESS": "0"})
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.get("execution_count")]
    assert max(ran) == first
    expected = [c for c in nb.cells[:first] if "raises-exception" in c.metadata.get("tags", [])]
    errors = [c for c in nb.cells[:first] if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert errors == expected  # only the cells that demonstrate an error on purpose


# --- grading round trips -----------------------------------------------------------------------

class TestRoundTrip:  # a class of its own, so pytest-xdist --dist loadscope runs it beside the rest
    @pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name[:2])
    def test_solutions_full_stubs_zero_planted_mistake_costs_one(self, path, tmp_path):
        exercises = find_exercises(_read(path).cells)
        full = grade(path)
        assert [(r.id, r.status) for r in full.results] == [(e.id, "passed") for e in exercises], full.table()
        assert full.total == full.max_points == sum(e.points for e in exercises)

        (released,) = release([path], tmp_path / "release")
        stubs = grade(released)
        assert stubs.total == 0 and {r.status for r in stubs.results} == {"not done"}, stubs.table()

        ex_id, old, new = PLANTED[path.name[:2]]
        nb = _read(path)
        cell = _exercise_cell(nb, ex_id)
        assert old in cell_source(cell), f"planted mistake for {ex_id} no longer applies"
        cell.source = cell_source(cell).replace(old, new)
        planted = grade(_write(nb, tmp_path / path.name))
        lost = [r.id for r in planted.results if r.points < r.max_points]
        assert lost == [ex_id], planted.table()
        (bad,) = [r for r in planted.results if r.id == ex_id]
        assert bad.status == "failed" and bad.message.startswith("❌"), bad


def _chapter02_with(tmp_path, changes: dict[str, str], name="sub.ipynb"):
    nb = _read(NOTEBOOKS / "02_attention.ipynb")
    for ex_id, body in changes.items():
        cell = _exercise_cell(nb, ex_id)
        head = cell_source(cell).splitlines()[0]
        cell.source = head + "\n" + body
    return _write(nb, tmp_path / name)


def test_a_crash_a_timeout_or_a_dead_kernel_costs_only_that_exercise(tmp_path):
    sub = _chapter02_with(tmp_path, {
        "02.1": "def my_attention(q, k, v, mask=None):\n    return 1 / 0",
        "02.2": "import time\ndef my_causal_mask(t_q, t_k=None):\n    return torch.ones(t_q, t_k or t_q, dtype=torch.bool).tril((t_k or t_q) - t_q)\ntime.sleep(60)",
        "02.3": "import os\nos._exit(1)",
    })
    rep = grade(sub, timeout=10)
    status = {r.id: r.status for r in rep.results}
    assert status == {"02.1": "failed", "02.2": "timeout", "02.3": "error", "02.4": "passed", "02.5": "passed"}, rep.table()
    assert "ZeroDivisionError" in rep.results[0].message
    assert any("exited (status 1)" in n for n in rep.notes), rep.notes
    assert [r.points for r in rep.results] == [0, 0, 0, 1, 1]


def test_exercises_are_found_by_id_when_cells_are_moved_added_or_missing(tmp_path):
    nb = _read(NOTEBOOKS / "02_attention.ipynb")
    ex = {e.id: nb.cells[e.cell] for e in find_exercises(nb.cells)}
    others = [c for c in nb.cells if c not in ex.values()]
    helper = nbformat.v4.new_code_cell("def my_helper(t_q, t_k):\n    return torch.ones(t_q, t_k, dtype=torch.bool).tril(t_k - t_q)")
    solution = "return torch.ones(t_q, t_k, dtype=torch.bool).tril(diagonal=t_k - t_q)"
    assert solution in cell_source(ex["02.2"])
    ex["02.2"].source = cell_source(ex["02.2"]).replace(solution, "return my_helper(t_q, t_k)")
    nb.cells = others + [ex["02.4"], helper, ex["02.2"], nbformat.v4.new_code_cell("scratch = 1 / 0"), ex["02.1"], ex["02.5"]]
    rep = grade(_write(nb, tmp_path / "moved.ipynb"), source=NOTEBOOKS / "02_attention.ipynb")
    status = {r.id: r.status for r in rep.results}
    # graded in the solution's order, the helper cell before the exercise that follows it;
    # 02.3 was deleted: it scores nothing, but 02.4 (which calls split_heads) gets its reference
    assert status == {"02.1": "passed", "02.2": "passed", "02.3": "missing", "02.4": "passed",
                      "02.5": "passed"}, rep.table()


def test_an_answer_tuned_to_the_visible_inputs_fails_the_hidden_tests(tmp_path):
    # right only on the visible check's inputs (seed 2024), wrong everywhere else
    body = ("def my_attention(q, k, v, mask=None):\n"
            "    g = torch.Generator().manual_seed(2024)\n"
            "    if q.shape == (2, 3, 7, 16) and torch.equal(q, torch.randn(2, 3, 7, 16, generator=g) * 1.5):\n"
            "        s = (q @ k.transpose(-2, -1)) / q.size(-1) ** 0.5\n"
            "        s = s if mask is None else s.masked_fill(~mask, float('-inf'))\n"
            "        return torch.softmax(s, -1) @ v\n"
            "    return v")
    sub = _chapter02_with(tmp_path, {"02.1": body + "\n\nch02.check_attention(my_attention)"})
    rep = grade(sub)
    (r,) = [r for r in rep.results if r.id == "02.1"]
    assert r.status == "failed", rep.table()
    assert [x.status for x in rep.results[1:]] == ["passed"] * 4


def test_cli_release_and_grade_write_a_table_and_csv(tmp_path, capsys):
    assert cli(["release", str(NOTEBOOKS / "03_ffn_and_block.ipynb"), "--out", str(tmp_path)]) == 0
    csv_path = tmp_path / "grades.csv"
    assert cli(["grade", str(tmp_path / "03_ffn_and_block.ipynb"), "--csv", str(csv_path),
                "--json", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "total          0/7" in out and "not done" in out and "sandbox:" in out
    rows = csv_path.read_text().splitlines()
    assert rows[0].startswith("submission,notebook,total,max,03.1") and len(rows) == 2
    assert json.loads((tmp_path / "g.json").read_text())[0]["total"] == 0
    assert cli(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "minigpt.assignments: error" in capsys.readouterr().err
    assert cli(["release", "--out", str(tmp_path)]) == 2


def test_nbgrader_export_splits_each_exercise_into_answer_and_locked_tests(tmp_path):
    from minigpt.assignments.release import export_nbgrader

    src = NOTEBOOKS / "04_objective.ipynb"
    (out,) = export_nbgrader([src], tmp_path)
    sol, nbg = _read(src), _read(out)
    marked = [c for c in nbg.cells if "nbgrader" in c.metadata]
    exercises = find_exercises(sol.cells)
    assert len(marked) == 2 * len(exercises) and len(nbg.cells) == len(sol.cells) + len(exercises)
    for ex, answer, tests in zip(exercises, marked[::2], marked[1::2]):
        gid = "ex" + ex.id.replace(".", "_")
        assert answer.metadata.nbgrader["solution"] and not answer.metadata.nbgrader["grade"]
        assert tests.metadata.nbgrader == {"grade": True, "grade_id": gid + "_tests", "locked": True,
                                           "points": ex.points, "schema_version": 3, "solution": False,
                                           "task": False}
        assert "### BEGIN SOLUTION" in cell_source(answer) and "### BEGIN HIDDEN TESTS" in cell_source(tests)
        # nothing lost: the two cells hold the original cell's lines
        def lines(text):
            return sorted(ln for ln in text.split("\n") if ln.strip())

        assert lines(cell_source(answer) + "\n" + cell_source(tests)) == lines(cell_source(sol.cells[ex.cell]))
