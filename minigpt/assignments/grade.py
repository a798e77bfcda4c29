"""Autograding: run a student's notebook with the hidden tests restored, points per exercise.

For each exercise (found by its ``# Exercise NN.M:`` id, wherever the student put it) the grader
runs three cells in a fresh kernel:

1. *answer*: the student's cell as submitted;
2. *test*: the solution notebook's visible checks and hidden tests for that exercise — the
   exercise scores its points when this cell runs without an error;
3. *restore*: the reference solution, silently, so that later exercises that build on this one
   (chapter 02's multi-head attention uses the student's ``split_heads``) are graded on their
   own merit: a mistake or a crash costs the exercise it is in, and only that one.

Only the cells that the exercises need run (see :mod:`.deps`), each with a time limit; a cell
that runs over it is interrupted and the grading goes on. If the student's code kills the
kernel, that exercise scores 0 and grading resumes in a new kernel. Checks compare with
tolerances on inputs from fixed seeds, so grades do not depend on the machine.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .deps import needed_cells
from .markers import (
    AssignmentError,
    cell_source,
    check_suffix,
    exercise_header,
    find_exercises,
    split_hidden,
)

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


@dataclass
class ExerciseResult:
    """The grade of one exercise; ``status`` is passed, failed (a check names the mistake), not done
    (the stub raises), error (another exception), timeout or missing (no cell with its id)."""

    id: str
    title: str
    points: float
    max_points: float
    status: str
    message: str = ""


@dataclass
class GradeReport:
    """The grade of one submission: a result per exercise of the solution notebook."""

    submission: str
    source: str
    results: list[ExerciseResult]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(r.points for r in self.results)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.results)

    def table(self) -> str:
        """A plain-text table, one exercise a row, with the feedback message of each failure."""
        lines = [f"{self.submission}  (solution: {Path(self.source).name}, {self.seconds:.0f} s)",
                 f"{'exercise':<9} {'points':>8}  {'status':<9} title / feedback"]
        for r in self.results:
            lines.append(f"{r.id:<9} {_num(r.points) + '/' + _num(r.max_points):>8}  {r.status:<9} {r.title}")
            if r.message:
                lines.append(" " * 30 + r.message)
        lines.append(f"{'total':<9} {_num(self.total) + '/' + _num(self.max_points):>8}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def row(self) -> dict:
        """One flat row (for CSV): submission, total, max, then the points of each exercise."""
        out = {"submission": self.submission, "notebook": Path(self.source).name,
               "total": self.total, "max": self.max_points}
        out.update({r.id: r.points for r in self.results})
        return out

    def to_json(self) -> dict:
        return {**self.row(), "seconds": round(self.seconds, 1), "notes": self.notes,
                "exercises": [asdict(r) for r in self.results]}


def _num(x: float) -> str:
    return f"{x:g}"


def find_source(submission_nb, submission: Path, source: str | Path | None = None,
                source_dir: str | Path | None = None) -> Path:
    """The solution notebook for a submission: given, or named in the released notebook's
    metadata, or the notebook of the same chapter in ``source_dir`` (the course's notebooks/)."""
    if source is not None:
        return Path(source)
    folder = Path(source_dir) if source_dir else NOTEBOOKS
    name = submission_nb.metadata.get("minigpt", {}).get("assignment", {}).get("source")
    if name and (folder / name).exists():
        return folder / name
    ids = [h[0] for c in submission_nb.cells if c.cell_type == "code" and (h := exercise_header(cell_source(c)))]
    chapters = {i.split(".")[0] for i in ids}
    if len(chapters) == 1:
        matches = sorted(folder.glob(f"{chapters.pop()}_*.ipynb"))
        if len(matches) == 1:
            return matches[0]
    raise AssignmentError(f"cannot tell which solution notebook grades {submission}: pass --source "
                          f"notebooks/NN_name.ipynb (looked in {folder})")


@dataclass
class _Cell:
    role: str  # context, answer, test, restore
    source: str  # what runs
    analysed: str  # what the dependency analysis reads (restore cells run under %%capture)
    exercise: str | None = None


def grading_plan(submission_nb, source_nb, *, full: bool = False) -> tuple[list[_Cell], list[str]]:
    """The cells to run, in order, and notes on what was matched (missing, duplicated exercises).

    The order is the solution notebook's: its own code cells, with each exercise cell replaced by
    the student's cell of the same id (wherever the student put it) and its test and restore
    cells. Code cells the student added (or changed) outside the exercises run just before the
    student's next exercise cell, where their helpers are needed. A missing exercise scores
    nothing, but its reference solution still runs, for the exercises that build on it.
    """
    src_ex = {e.id: e for e in find_exercises(source_nb.cells)}
    src_code = {cell_source(c) for c in source_nb.cells if c.cell_type == "code"}
    notes: list[str] = []
    answers: dict[str, str] = {}
    added: dict[str | None, list[str]] = {}  # exercise id -> student cells that precede it
    pending: list[str] = []
    for c in submission_nb.cells:
        if c.cell_type != "code":
            continue
        text = cell_source(c)
        h = exercise_header(text)
        if h is not None and h[0] in src_ex:
            if h[0] in answers:
                notes.append(f"exercise {h[0]} appears more than once; the last copy was graded")
            answers[h[0]] = split_hidden(text, f"submission, exercise {h[0]}")[0]
            added[h[0]] = added.get(h[0], []) + pending
            pending = []
        elif h is not None:
            notes.append(f"exercise {h[0]} is not in the solution notebook and was not graded")
        elif text.strip() and text not in src_code:
            pending.append(text)
    plan: list[_Cell] = []
    for c in source_nb.cells:
        if c.cell_type != "code":
            continue
        text = cell_source(c)
        h = exercise_header(text)
        if h is None:
            plan.append(_Cell("context", text, text))
            continue
        ex = src_ex[h[0]]
        where = f"solution notebook, exercise {ex.id}"
        visible, hidden = split_hidden(text, where)
        restore = _Cell("restore", "%%capture _minigpt_restore\n" + visible, visible, ex.id)
        if ex.id not in answers:
            plan.append(restore)
            continue
        plan += [_Cell("context", t, t) for t in added[ex.id]]
        test = "\n".join(p for p in (check_suffix(text, where), hidden) if p.strip())
        plan += [_Cell("answer", answers[ex.id], answers[ex.id], ex.id), _Cell("test", test or "pass", test, ex.id),
                 restore]
    plan += [_Cell("context", t, t) for t in pending]
    if not full:
        required = {k for k, c in enumerate(plan) if c.role != "context"}
        keep = needed_cells([c.analysed for c in plan], required)
        plan = [c for k, c in enumerate(plan) if k in keep]
    return plan, notes


def _kernel_manager():
    """A kernel in this Python environment (the one with minigpt), whatever kernelspecs exist."""
    import ipykernel.kernelspec
    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class _HereSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict())

    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=_HereSpecs())


def _error(cell) -> tuple[str, str] | None:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            return out.get("ename", "Error"), out.get("evalue", "")
    return None


def _run(plan: list[_Cell], cwd: Path, timeout: int, skip: set[int]) -> tuple[dict[int, dict], int | None]:
    """Run the plan's cells (except ``skip``) in one kernel; stop at a kernel death.

    Returns each run cell's outcome ``{"error": (ename, evalue) | None, "seconds": s}`` and the
    index of the cell that killed the kernel (or None).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c.source) for c in plan]
    client = NotebookClient(nb, km=_kernel_manager(), timeout=timeout, allow_errors=True, shutdown_kernel="immediate",
                            interrupt_on_timeout=True, resources={"metadata": {"path": str(cwd)}},
                            error_on_timeout={"ename": "Timeout", "evalue": f"the cell ran over {timeout} s",
                                              "traceback": []})
    env = {**os.environ, "MINIGPT_PROGRESS": "0", "PYTHONHASHSEED": "0", "MPLBACKEND": "agg"}
    outcome: dict[int, dict] = {}
    with client.setup_kernel(env=env, cwd=str(cwd), cleanup_kc=True):  # shuts the kernel down on exit
        for k, cell in enumerate(nb.cells):
            if k in skip:
                continue
            t0 = time.perf_counter()
            try:
                client.execute_cell(cell, k)
            except DeadKernelError:
                return outcome, k
            seconds = time.perf_counter() - t0
            err = _error(cell)
            if err and (err[0] == "KeyboardInterrupt" or seconds >= timeout):
                err = ("Timeout", f"the cell ran over {timeout} s")
            outcome[k] = {"error": err, "seconds": seconds}
    return outcome, None


def grade(submission: str | Path, source: str | Path | None = None, *, timeout: int = 120,
          full: bool = False, source_dir: str | Path | None = None) -> GradeReport:
    """Grade one submitted notebook against its solution notebook (see the module docstring).

    ``timeout`` is per cell, in seconds; ``full=True`` runs every cell instead of only those the
    exercises need.
    """
    import nbformat

    t0 = time.perf_counter()
    submission = Path(submission)
    try:
        sub_nb = nbformat.read(submission, as_version=4)
    except Exception as e:  # noqa: BLE001 - unreadable JSON, not a notebook …
        raise AssignmentError(f"{submission} is not a readable notebook ({e}); ask for the .ipynb file again") from e
    src_path = find_source(sub_nb, submission, source, source_dir)
    src_nb = nbformat.read(src_path, as_version=4)
    plan, notes = grading_plan(sub_nb, src_nb, full=full)

    skip: set[int] = set()
    died: dict[str, str] = {}
    while True:  # a kernel death skips the cells that caused it and starts again in a new kernel
        outcome, dead_at = _run(plan, src_path.parent, timeout, skip)
        if dead_at is None:
            break
        cell = plan[dead_at]
        where = f"exercise {cell.exercise}" if cell.role in ("answer", "test") else "a cell outside the exercises"
        notes.append(f"the kernel died in {where}; grading went on in a new kernel without it")
        if cell.role in ("answer", "test"):
            died[cell.exercise] = "the kernel died while running this exercise (a crash, or out of memory)"
            skip |= {k for k, c in enumerate(plan) if c.exercise == cell.exercise and c.role in ("answer", "test")}
        else:
            skip.add(dead_at)

    results = []
    for ex in find_exercises(src_nb.cells):
        test = [k for k, c in enumerate(plan) if c.exercise == ex.id and c.role == "test"]
        if ex.id in died:
            status, msg = "error", died[ex.id]
        elif not test:
            status, msg = "missing", f"no cell starting with '# Exercise {ex.id}:' in the submission"
        elif test[0] not in outcome:
            status, msg = "error", "this exercise did not run"
        else:
            err = outcome[test[0]]["error"]
            answer = outcome.get(test[0] - 1, {}).get("error")  # the answer cell runs just before its test
            if answer is not None and (answer[0] == "Timeout" or (
                    err is not None and "NotImplementedError" in f"{answer[0]} {answer[1]}")):
                err = answer  # a hung answer cell, or a stub: say so rather than what followed from it
            if err is None:
                status, msg = "passed", ""
            elif err[0] == "Timeout":
                status, msg = "timeout", err[1]
            elif "NotImplementedError" in f"{err[0]} {err[1]}":
                status, msg = "not done", "the stub is still there: write the solution in place of the raise"
            elif err[0] in ("CheckFailed", "AssertionError"):
                status, msg = "failed", err[1]
            else:
                status, msg = "error", f"{err[0]}: {err[1]}"
        pts = ex.points if status == "passed" else 0.0
        results.append(ExerciseResult(ex.id, ex.title, pts, ex.points, status, _short(msg)))
    return GradeReport(str(submission), str(src_path), results, time.perf_counter() - t0, notes)


def _short(message: str, limit: int = 400) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def write_rows(reports: list[GradeReport], path: str | Path) -> None:
    """Write (or append to) a CSV file, one row per submission, or a JSON list if it ends in .json."""
    path = Path(path)
    if path.suffix == ".json":
        old = json.loads(path.read_text()) if path.exists() else []
        path.write_text(json.dumps(old + [r.to_json() for r in reports], indent=1, ensure_ascii=False) + "\n")
        return
    rows = [r.row() for r in reports]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    new = not path.exists() or path.stat().st_size == 0
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    if new:
        writer.writeheader()
    writer.writerows(rows)
    with path.open("a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


__all__ = ["ExerciseResult", "GradeReport", "grade", "grading_plan", "find_source", "write_rows"]
