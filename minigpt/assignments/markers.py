"""The markers in a solution notebook: exercises, solution regions and hidden tests.

An exercise is a code cell whose first comment line is ``# Exercise 02.1: title`` (optionally
``[2 points]`` at the end; 1 point otherwise). Inside it, the part a student writes sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines, and checks that students do not see sit
between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` — nbgrader's conventions, so the
same notebooks work with nbgrader. Exercises are found by id, never by cell position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
EXERCISE_RE = re.compile(
    r"^#\s*Exercise\s+(?P<id>\d+\.\d+)\s*:\s*(?P<title>.*?)\s*(?:\[(?P<points>\d+(?:\.\d+)?)\s*points?\])?\s*$"
)


class AssignmentError(ValueError):
    """A notebook's markers are malformed; the message names the cell and the fix."""


@dataclass(frozen=True)
class Exercise:
    """One exercise: its id (``"02.1"``), title, points and the index of its code cell."""

    id: str
    title: str
    points: float
    cell: int


def exercise_header(source: str) -> tuple[str, str, float] | None:
    """``(id, title, points)`` if the cell's first non-blank line is an exercise header."""
    for line in source.splitlines():
        if line.strip():
            m = EXERCISE_RE.match(line.strip())
            if not m:
                return None
            return m["id"], m["title"], float(m["points"] or 1)
    return None


_LENIENT_RE = re.compile(
    r"^#+\s*Exercise\s+(?P<a>\d+)\.(?P<b>\d+)\s*[:.-]?\s*(?P<title>.*?)\s*(?:\[(?P<points>\d+(?:\.\d+)?)\s*points?\])?\s*$",
    re.IGNORECASE)
_PREAMBLE = re.compile(r"^(%|!|import\s|from\s+\S+\s+import\s|#)")


def lenient_header(source: str) -> tuple[str, str, float] | None:
    """How the grader reads a *submission's* cell: the header may follow imports, comments or a
    cell magic (``%%time``), and ``# Exercise 2.2`` means ``02.2``."""
    for line in source.splitlines():
        s = line.strip()
        if not s:
            continue
        m = _LENIENT_RE.match(s)
        if m:
            return f"{int(m['a']):02d}.{int(m['b'])}", m["title"], float(m["points"] or 1)
        if not _PREAMBLE.match(s):
            return None
    return None


def find_exercises(cells: list) -> list[Exercise]:
    """The exercises of a notebook's cells, in order; duplicate ids are an error."""
    found: dict[str, Exercise] = {}
    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        head = exercise_header(cell_source(cell))
        if head is None:
            continue
        if head[0] in found:
            raise AssignmentError(f"exercise {head[0]} appears twice (cells {found[head[0]].cell} and {i}); "
                                  "give each exercise its own id")
        found[head[0]] = Exercise(head[0], head[1], head[2], i)
    return list(found.values())


def cell_source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _regions(source: str, begin: str, end: str, where: str) -> list[tuple[int, int]]:
    """Line index pairs (begin, end) of the marker regions; unbalanced markers are an error."""
    out, start = [], None
    for i, line in enumerate(source.splitlines()):
        s = line.strip()
        if s == begin:
            if start is not None:
                raise AssignmentError(f"{where}: line {i + 1} opens '{begin}' inside another; close the first with '{end}'")
            start = i
        elif s == end:
            if start is None:
                raise AssignmentError(f"{where}: line {i + 1} has '{end}' without a '{begin}' before it")
            out.append((start, i))
            start = None
    if start is not None:
        raise AssignmentError(f"{where}: '{begin}' on line {start + 1} is never closed; add '{end}'")
    return out


def has_solution(source: str) -> bool:
    return any(line.strip() == BEGIN_SOLUTION for line in source.splitlines())


def split_hidden(source: str, where: str = "cell") -> tuple[str, str]:
    """``(visible, hidden)``: the source without its hidden-test regions, and those regions' code."""
    lines = source.splitlines()
    regions = _regions(source, BEGIN_HIDDEN, END_HIDDEN, where)
    drop = {i for a, b in regions for i in range(a, b + 1)}
    hidden = [lines[i] for a, b in regions for i in range(a + 1, b)]
    visible = [line for i, line in enumerate(lines) if i not in drop]
    while visible and not visible[-1].strip():
        visible.pop()
    return "\n".join(visible), "\n".join(hidden)


def stub_solutions(source: str, exercise_id: str, title: str, where: str = "cell") -> str:
    """Replace each solution region by a stub that raises ``NotImplementedError`` with a hint.

    The stub keeps the indentation of the ``BEGIN SOLUTION`` line, so a region inside a function
    body stays a valid body. Lines of the region that start with ``# Hint:`` are kept for students.
    """
    lines = source.splitlines()
    regions = _regions(source, BEGIN_SOLUTION, END_SOLUTION, where)
    out, pos = [], 0
    for a, b in regions:
        out.extend(lines[pos:a])
        indent = lines[a][: len(lines[a]) - len(lines[a].lstrip())]
        hints = [lines[i].strip() for i in range(a + 1, b) if lines[i].strip().lower().startswith("# hint:")]
        out.extend(indent + h for h in hints)
        hint = hints[0][len("# hint:"):].strip() if hints else f"see the text above ({title})"
        message = f"Exercise {exercise_id}: replace this line with your code; hint: {hint}"
        out.append(f"{indent}# YOUR CODE HERE")
        out.append(f"{indent}raise NotImplementedError({message!r})")
        pos = b + 1
    out.extend(lines[pos:])
    return "\n".join(out)


def check_suffix(source: str, where: str = "cell") -> str:
    """The visible checks of an exercise cell: the top-level code after its last solution region."""
    visible, _ = split_hidden(source, where)
    lines = visible.splitlines()
    regions = _regions(visible, BEGIN_SOLUTION, END_SOLUTION, where)
    if not regions:
        return ""
    rest = lines[regions[-1][1] + 1:]
    for i, line in enumerate(rest):  # skip the rest of a function body the region sat in
        if line.strip() and not line[0].isspace():
            return "\n".join(rest[i:])
    return ""
