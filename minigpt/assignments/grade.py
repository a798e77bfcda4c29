"""Autograding: the submission's code runs in a sandboxed worker; the verdict is computed here.

The trust boundary: a submission's code runs only in its own worker process (see
:mod:`.sandbox`), which never decides anything. For each exercise (found by its
``# Exercise NN.M:`` id, wherever the student put it) the grader

1. runs the student's cell in the worker (with the visible check calls taken out);
2. reads the checks named in the *solution notebook's* hidden tests (``chNN.check_x(my_fn)``)
   and runs each check **in the grader process**: the check draws its inputs from a secret made
   for this grading run, calls ``my_fn`` in the worker on them (the arguments go there, the
   return value comes back as plain data), and compares with the package's reference here.
   Each check, on each of ``draws`` secret input sets, is one *case*; an exercise scores the
   share of its cases passed (or all-or-nothing);
3. runs the reference solution in the worker, silently, so that later exercises that build on
   this one (chapter 02's multi-head attention uses the student's ``split_heads``) are graded
   on their own merit.

Only the cells that the exercises need run (see :mod:`.deps`). A request that runs over its time
limit, or a worker that dies, fails the exercise it was running (never a pass): the worker is
killed with everything it started, and grading goes on in a new worker that replays the
submission without that exercise's answer. Nothing the submission does in its worker can change
a verdict: the checks, the references, the secret and the answer key live only here.
"""

from __future__ import annotations

import ast
import base64
import importlib
import io
import pickle
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .deps import cell_names, needed_cells
from .forbidden import Forbidden, forbidden_message, forbidden_uses
from .markers import (
    AssignmentError,
    cell_source,
    exercise_header,
    find_exercises,
    lenient_header,
    split_hidden,
)
from .sandbox import Limits, Worker, WorkerLost, sandbox_description

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
# ``02_attention.ipynb`` is chapter 02; a letter after the number (``00b_pytorch_primer.ipynb``)
# marks a notebook that shares its chapter's exercise ids (``00.1``) with one that has none.
_CHAPTER_FILE = re.compile(r"^(\d\d)[a-z]?_[A-Za-z0-9_-]+\.ipynb$")


@dataclass
class ExerciseResult:
    """The grade of one exercise; ``status`` is passed, partial (some cases passed), failed (a
    check names the mistake), not done (the stub raises), error (another exception, or the worker
    died), timeout, or missing (no cell with its id)."""

    id: str
    title: str
    points: float
    max_points: float
    status: str
    message: str = ""
    cases_passed: int = 0
    cases: int = 0


@dataclass
class GradeReport:
    """The grade of one submission: a result per exercise of the solution notebook."""

    submission: str
    source: str
    results: list[ExerciseResult]
    seconds: float
    notes: list[str] = field(default_factory=list)
    sandbox: str = ""

    @property
    def total(self) -> float:
        return round(sum(r.points for r in self.results), 4)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.results)

    def table(self) -> str:
        """A plain-text table, one exercise a row, with the feedback message of each failure."""
        lines = [f"{self.submission}  (solution: {Path(self.source).name}, {self.seconds:.0f} s)",
                 f"{'exercise':<9} {'points':>8}  {'status':<9} title / feedback"]
        for r in self.results:
            lines.append(f"{r.id:<9} {_num(r.points) + '/' + _num(r.max_points):>8}  {r.status:<9} {r.title}"
                         + (f" ({r.cases_passed}/{r.cases} cases)" if 0 < r.cases_passed < r.cases else ""))
            if r.message:
                lines.append(" " * 30 + r.message)
        lines.append(f"{'total':<9} {_num(self.total) + '/' + _num(self.max_points):>8}")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"sandbox: {self.sandbox}")
        return "\n".join(lines)

    def feedback(self) -> str:
        """Markdown to hand back to the student: points and message per exercise, nothing of the
        hidden tests (their inputs are drawn afresh for each grading run)."""
        lines = [f"# Feedback: {Path(self.source).name}", "",
                 f"Total: **{_num(self.total)} / {_num(self.max_points)}** points", "",
                 "| exercise | points | status | feedback |", "|---|---:|---|---|"]
        for r in self.results:
            msg = r.message.replace("|", "\\|") or ("all cases passed" if r.status == "passed" else "")
            cases = f" ({r.cases_passed} of {r.cases} test cases passed)" if r.cases else ""
            lines.append(f"| {r.id} {r.title} | {_num(r.points)} / {_num(r.max_points)} | {r.status} | {msg}{cases} |")
        if self.notes:
            lines += ["", *[f"* {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def row(self) -> dict:
        """One flat row (for CSV): submission, total, max, then the points of each exercise."""
        out = {"submission": self.submission, "notebook": Path(self.source).name,
               "total": _clean(self.total), "max": _clean(self.max_points)}
        out.update({r.id: _clean(r.points) for r in self.results})
        return out

    def to_json(self) -> dict:
        return {**self.row(), "seconds": round(self.seconds, 1), "notes": self.notes, "sandbox": self.sandbox,
                "exercises": [asdict(r) for r in self.results]}


def _clean(x: float) -> int | float:
    return int(x) if float(x).is_integer() else round(x, 4)


def _num(x: float) -> str:
    return f"{x:g}"


def _has_exercises(path: Path) -> bool:
    import nbformat

    try:
        return bool(find_exercises(nbformat.read(path, as_version=4).cells))
    except (OSError, ValueError, AssignmentError):
        return False


def find_source(submission_nb, submission: Path, source: str | Path | None = None,
                source_dir: str | Path | None = None) -> Path:
    """The solution notebook (the answer key) for a submission: ``source`` if the instructor gave
    one, else the notebook of the submission's chapter in ``source_dir`` (the course's
    ``notebooks/``). The submission can only *name a chapter* (its metadata, or its exercise
    ids); a path in it is never followed, so it cannot choose its own answer key."""
    if source is not None:
        return Path(source)
    folder = Path(source_dir) if source_dir else NOTEBOOKS
    chapters: set[str] = set()
    meta = submission_nb.metadata.get("minigpt", {}).get("assignment", {})
    name = meta.get("source") if isinstance(meta, dict) else None
    if isinstance(name, str) and (m := _CHAPTER_FILE.match(name)):
        chapters.add(m[1])
    else:
        for c in submission_nb.cells:
            if c.cell_type == "code" and (h := lenient_header(cell_source(c))):
                chapters.add(h[0].split(".")[0])
    if len(chapters) == 1:
        chapter = chapters.pop()
        matches = [p for p in sorted(folder.glob(f"{chapter}*_*.ipynb"))
                   if (m := _CHAPTER_FILE.match(p.name)) and m[1] == chapter]
        if len(matches) > 1:  # 00_setup has no exercises; 00b_pytorch_primer holds chapter 00's
            matches = [p for p in matches if _has_exercises(p)]
        if len(matches) == 1:
            return matches[0]
    raise AssignmentError(f"cannot tell which solution notebook grades {submission}: pass --source "
                          f"notebooks/NN_name.ipynb (looked in {folder})")


@dataclass
class _Cell:
    role: str  # context, answer, evaluate, restore
    source: str  # what runs in the worker (evaluate: the hidden tests, which run here)
    analysed: str  # what the dependency analysis reads
    exercise: str | None = None


_CHECK_CALL = re.compile(r"^ch\d\d$")


def _is_check_call(node: ast.AST) -> bool:
    """``chNN.check_x(...)`` as a statement."""
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr.startswith("check_")
            and isinstance(node.value.func.value, ast.Name) and bool(_CHECK_CALL.match(node.value.func.value.id)))


def without_check_calls(source: str) -> str:
    """The student's cell without its top-level visible check calls (the grader runs the checks)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    drop = {i for node in tree.body if _is_check_call(node) for i in range(node.lineno - 1, node.end_lineno)}
    return "\n".join(line for i, line in enumerate(source.splitlines()) if i not in drop)


def check_calls(hidden: str, where: str) -> list[tuple[str, str, list[str]]]:
    """``(module, check, [argument expressions])`` for each ``chNN.check_x(...)`` of hidden tests."""
    out = []
    for node in ast.walk(ast.parse(hidden)):
        if _is_check_call(node):
            call = node.value
            if call.keywords:
                raise AssignmentError(f"{where}: pass the arguments of {call.func.attr} by position")
            out.append((call.func.value.id, call.func.attr, [ast.unparse(a) for a in call.args]))
    if not out:
        raise AssignmentError(f"{where}: the hidden tests call no chNN.check_… function; the grader "
                              "runs those checks (with inputs it draws) to grade the exercise")
    return out


def grading_plan(submission_nb, source_nb, *, full: bool = False) -> tuple[list[_Cell], list[str]]:
    """The cells to run, in order, and notes on what was matched (missing, duplicated exercises).

    The order is the solution notebook's: its own code cells, with each exercise cell replaced by
    the student's cell of the same id (wherever the student put it), an *evaluate* step (run by
    the grader) and the reference solution. A code cell the student added or changed outside the
    exercises runs right after the exercise cell above it if it defines a name that exercise is
    graded on (an answer written in a new cell below the stub), else just before the student's
    next exercise cell (a helper). A missing exercise scores nothing, but its reference solution
    still runs, for the exercises that build on it.
    """
    src_ex = {e.id: e for e in find_exercises(source_nb.cells)}
    src_code = {cell_source(c) for c in source_nb.cells if c.cell_type == "code"}
    graded_names = {}
    for ex in src_ex.values():
        _, hidden = split_hidden(cell_source(source_nb.cells[ex.cell]))
        graded_names[ex.id] = cell_names(hidden).uses
    notes: list[str] = []
    answers: dict[str, str] = {}
    before: dict[str, list[str]] = {}  # exercise id -> student cells that run before its answer
    after: dict[str, list[str]] = {}  # ... and after it
    pending: list[str] = []
    last: str | None = None
    for c in submission_nb.cells:
        if c.cell_type != "code":
            continue
        text = cell_source(c)
        h = lenient_header(text)
        if h is not None and h[0] in src_ex:
            if h[0] in answers:
                notes.append(f"exercise {h[0]} appears more than once; the last copy was graded")
            answers[h[0]] = without_check_calls(split_hidden(text, f"submission, exercise {h[0]}")[0])
            before[h[0]] = before.get(h[0], []) + pending
            after[h[0]] = []
            pending = []
            last = h[0]
        elif h is not None:
            notes.append(f"exercise {h[0]} is not in the solution notebook and was not graded")
        elif text.strip() and text not in src_code:
            text = without_check_calls(text)
            if last is not None and cell_names(text).binds & graded_names[last]:
                after[last].append(text)
            else:
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
        check_calls(hidden, where)  # malformed hidden tests are the instructor's error: say so now
        restore = _Cell("restore", visible, visible, ex.id)
        if ex.id not in answers:
            plan.append(restore)
            continue
        plan += [_Cell("context", t, t) for t in before[ex.id]]
        plan.append(_Cell("answer", answers[ex.id], answers[ex.id], ex.id))
        plan += [_Cell("answer", t, t, ex.id) for t in after[ex.id]]
        plan += [_Cell("evaluate", hidden, hidden, ex.id), restore]
    plan += [_Cell("context", t, t) for t in pending]
    if not full:
        required = {k for k, c in enumerate(plan) if c.role != "context"}
        keep = needed_cells([c.analysed for c in plan], required)
        plan = [c for k, c in enumerate(plan) if k in keep]
    return plan, notes


# --- evaluation: checks run here, the student's functions there ------------------------------

def _decode(b64: str):
    import torch

    from .worker import OPAQUE

    value = torch.load(io.BytesIO(base64.b64decode(b64)), weights_only=True, map_location="cpu")
    return _opaque(value, OPAQUE)


def _opaque(value, key: str):
    """Stand-ins for values the worker could not send (a ``GPT``, a generator …): objects of a
    class of that name, so a check can say "got GPT"."""
    if isinstance(value, dict):
        if set(value) == {key}:
            return type(str(value[key])[:60] or "object", (), {})()
        return {k: _opaque(v, key) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_opaque(v, key) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _student_error(reply: dict) -> Exception:
    """The student's exception, re-created by name (with a message), for the check to report."""
    name = str(reply.get("ename", "Error"))[:60]
    if not name.isidentifier():
        name = "Error"
    base = NotImplementedError if name == "NotImplementedError" else Exception
    return type(name, (base,), {})(str(reply.get("evalue", ""))[:300])


def _apply_state(args: tuple, state: dict) -> None:
    """Copy what the call changed in the worker (module weights, gradients, optimizer state) into
    the grader's arguments, where the check reads it."""
    import torch

    for key, st in state.items():
        a = args[int(key)]
        if isinstance(a, torch.nn.Module) and isinstance(st, dict) and "state" in st:
            a.load_state_dict(st["state"])
            named = dict(a.named_parameters())
            for n, p in named.items():
                g = st["grads"].get(n)
                p.grad = g.to(p.dtype) if isinstance(g, torch.Tensor) and g.shape == p.shape else None
        elif isinstance(a, torch.optim.Optimizer) and isinstance(st, dict) and "optimizer" in st:
            a.load_state_dict(st["optimizer"])


class _Remote:
    """The student's function, seen from the grader: each call runs in the worker."""

    def __init__(self, worker: Worker, expr: str, forbid=()):
        self.worker, self.expr, self.forbid = worker, expr, tuple(forbid)
        self.__name__ = expr

    def __call__(self, *args):
        import torch

        # pickling a module drops its gradients; send them along (a training step that forgets
        # zero_grad accumulates into them)
        grads = {i: {n: p.grad for n, p in a.named_parameters() if p.grad is not None}
                 for i, a in enumerate(args) if isinstance(a, torch.nn.Module)}
        reply = self.worker.request(op="call", expr=self.expr, args=pickle.dumps((args, grads)), forbid=self.forbid)
        if reply.get("forbidden"):
            raise Forbidden(forbidden_message(reply["forbidden"]))
        if not reply.get("ok"):
            raise _student_error(reply)
        _apply_state(args, _decode(reply["state"]))
        return _decode(reply["value"])


def _argument(worker: Worker, expr: str, forbid=()):
    """An argument of a check call: a literal as itself, the student's function as a :class:`_Remote`,
    any other expression as the value the worker computes (the student's answer)."""
    try:
        return ast.literal_eval(expr)
    except (ValueError, SyntaxError):
        pass
    reply = worker.request(op="kind", expr=expr)
    if not reply.get("ok"):
        err = _student_error(reply)
        raise _Missing(f"`{expr}` is not available after your cell ran ({type(err).__name__}: {err})")
    return _Remote(worker, expr, forbid) if reply.get("callable") else _decode(reply["value"])


class _Missing(Exception):
    pass


@dataclass
class _Case:
    status: str  # passed, failed, not done, error
    message: str = ""


def _evaluate(worker: Worker, hidden: str, where: str, offsets: list[int], answer_error: str | None,
              answer_code: str = "") -> list[_Case]:
    """Run the hidden tests' checks here, once per secret offset each; one case per run."""
    from minigpt.checks import CheckFailed, hidden_inputs

    cases = []
    for module, name, exprs in check_calls(hidden, where):
        check = getattr(importlib.import_module(f"minigpt.checks.{module}"), name)
        forbid = getattr(check, "forbidden", ())
        used = forbidden_uses(answer_code, forbid)
        for offset in offsets:
            if used:
                cases.append(_Case("failed", forbidden_message(used)))
                continue
            try:
                args = [_argument(worker, e, forbid) for e in exprs]
                with hidden_inputs(offset):
                    check(*args)
                cases.append(_Case("passed"))
            except Forbidden as e:
                cases.append(_Case("failed", str(e)))
            except _Missing as e:
                cases.append(_outcome(str(e), answer_error, "error"))
            except CheckFailed as e:
                cases.append(_outcome(str(e), answer_error, "failed"))
            except Exception as e:  # noqa: BLE001 - an answer the check cannot even compare
                cases.append(_outcome(f"❌ your answer could not be checked ({type(e).__name__}: {e})", answer_error, "failed"))
    return cases


def _outcome(message: str, answer_error: str | None, status: str) -> _Case:
    if "NotImplementedError" in message or (answer_error and "NotImplementedError" in answer_error):
        return _Case("not done", "the stub is still there: write the solution in place of the raise")
    if answer_error and status == "error":
        return _Case("error", f"your cell raised {answer_error}")
    return _Case(status, message)


# --- running a submission -------------------------------------------------------------------------

def _run_plan(plan: list[_Cell], limits: Limits, offsets: list[int], sandbox: bool,
              deadline: float) -> tuple[dict[str, list[_Case]], dict[str, tuple[str, str]], list[str]]:
    """Run the plan in a worker; on a lost worker, replay it in a new one without the exercise
    that was running. Returns the cases per exercise, the exercises lost ``{id: (status, why)}``
    and notes."""
    cases: dict[str, list[_Case]] = {}
    lost: dict[str, tuple[str, str]] = {}
    notes: list[str] = []
    skip: set[int] = set()
    for _attempt in range(len(plan) + 1):
        k = -1
        try:
            with Worker(limits, sandbox=sandbox) as worker:
                answer_error: dict[str, str] = {}
                for k, cell in enumerate(plan):
                    if k in skip or (cell.exercise in lost and cell.role in ("answer", "evaluate")):
                        continue
                    if cell.role == "evaluate" and cell.exercise in cases:
                        continue
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WorkerLost("the submission ran over its total time limit")
                    timeout = min(limits.timeout, remaining)
                    if cell.role == "evaluate":
                        worker.limits = Limits(**{**asdict(limits), "timeout": timeout})
                        code = "\n\n".join(c.source for c in plan if c.exercise == cell.exercise and c.role == "answer")
                        cases[cell.exercise] = _evaluate(worker, cell.source, f"exercise {cell.exercise}",
                                                         offsets, answer_error.get(cell.exercise), code)
                        worker.limits = limits
                        continue
                    reply = worker.request(op="run", code=cell.source, timeout=timeout)
                    if not reply.get("ok") and cell.role == "answer":
                        answer_error.setdefault(cell.exercise, f"{reply.get('ename')}: {reply.get('evalue')}")
                return cases, lost, notes
        except WorkerLost as e:
            cell = plan[k] if k >= 0 else None
            status = "timeout" if "time limit" in e.why else "error"
            if cell is not None and cell.role in ("answer", "evaluate"):
                lost[cell.exercise] = (status, e.why)
                notes.append(f"exercise {cell.exercise}: {e.why}; grading went on in a new worker without it")
            elif cell is not None:
                skip.add(k)
                notes.append(f"a cell outside the exercises failed ({e.why}); grading went on without it")
            else:
                raise AssignmentError(f"the grading worker did not start: {e.why}") from None
            if "total time limit" in e.why:
                for c in plan:
                    if c.exercise and c.exercise not in cases:
                        lost.setdefault(c.exercise, ("timeout", e.why))
                return cases, lost, notes
    return cases, lost, notes


def grade(submission: str | Path, source: str | Path | None = None, *, timeout: int = 120,
          full: bool = False, source_dir: str | Path | None = None, draws: int = 2,
          all_or_nothing: bool = False, total_timeout: float | None = None, sandbox: bool = True,
          limits: Limits | None = None) -> GradeReport:
    """Grade one submitted notebook against its solution notebook (see the module docstring).

    ``timeout`` is per cell and per call of a student's function, in seconds; ``total_timeout``
    (default 10 × ``timeout``) bounds the whole submission. ``draws`` is the number of secret input
    sets each hidden check runs on; ``all_or_nothing`` gives an exercise its points only if every
    case passes. ``full=True`` runs every cell instead of only those the exercises need.
    ``sandbox=False`` runs without bubblewrap even where it works (the report says so).
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
    limits = limits or Limits(timeout=timeout)
    secret = secrets.SystemRandom()
    offsets = [secret.randrange(10_000, 2**31 - 10_000) for _ in range(max(1, draws))]
    deadline = time.monotonic() + (total_timeout or 10 * limits.timeout)
    cases, lost, run_notes = _run_plan(plan, limits, offsets, sandbox, deadline)
    notes += run_notes

    results = []
    for ex in find_exercises(src_nb.cells):
        done = cases.get(ex.id)
        n = len(offsets) * len(check_calls(split_hidden(cell_source(src_nb.cells[ex.cell]))[1], ex.id))
        if ex.id in lost:
            status, msg = lost[ex.id]
            msg = f"{'timed out' if status == 'timeout' else 'failed'}: {msg}"
            good = 0
        elif done is None:
            missing = not any(c.exercise == ex.id and c.role == "answer" for c in plan)
            status, msg, good = ("missing", f"no cell with '# Exercise {ex.id}:' in the submission", 0) if missing \
                else ("error", "this exercise did not run", 0)
        else:
            good = sum(c.status == "passed" for c in done)
            bad = [c for c in done if c.status != "passed"]
            status, msg = ("passed", "") if not bad else (("partial", bad[0].message) if good else (bad[0].status, bad[0].message))
        share = good / n if n else 0.0
        pts = ex.points * (share if not all_or_nothing else float(good == n and n > 0))
        results.append(ExerciseResult(ex.id, ex.title, round(pts, 4), ex.points, status, _short(msg), good, n))
    return GradeReport(str(submission), str(src_path), results, time.perf_counter() - t0, notes,
                       sandbox_description(sandbox))


def _short(message: str, limit: int = 400) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


__all__ = ["ExerciseResult", "GradeReport", "find_source", "grade", "grading_plan"]
