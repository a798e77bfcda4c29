"""Student versions of the solution notebooks.

``release`` writes a copy in which every solution region is replaced by a stub that raises
``NotImplementedError`` with a hint, hidden tests are removed, outputs and execution counts are
cleared, and local images are embedded as attachments, so the file works wherever it is copied.
The exercises and their points are recorded in the notebook's metadata (for the grader). Beside
them go the answer-free files they link to (the glossary, the setup notebook), so that their links
work in the released folder.
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path

from .markers import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    END_HIDDEN,
    AssignmentError,
    cell_source,
    check_suffix,
    exercise_header,
    find_exercises,
    has_solution,
    split_hidden,
    stub_solutions,
)

_SOLUTION_MD = re.compile(r"^[ \t]*### BEGIN SOLUTION[ \t]*$.*?^[ \t]*### END SOLUTION[ \t]*$", re.M | re.S)
_MARKER_NOTE = re.compile(r"between\s+`### BEGIN SOLUTION`\s+and\s+`### END SOLUTION`")
_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<path>(?!https?:|attachment:|data:)[^)\s]+)\)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<name>[\w.-]+\.(?:ipynb|md))(?:#[^)\s]*)?\)")  # a file beside it


def student_notebook(nb, source: Path):
    """The student version of a solution notebook (a new notebook; ``nb`` is not changed)."""
    import copy

    nb = copy.deepcopy(nb)
    exercises = find_exercises(nb.cells)
    for i, cell in enumerate(nb.cells):
        text = cell_source(cell)
        where = f"{source.name}, cell {i}"
        if cell.cell_type == "code":
            text, _ = split_hidden(text, where)
            head = exercise_header(text)
            if head:
                text = stub_solutions(text, head[0], head[1], where)
            elif has_solution(text):
                raise AssignmentError(f"{where} has '{BEGIN_SOLUTION}' but no '# Exercise NN.M: title' first line; "
                                      "add the header so the grader can find the exercise")
            cell.source = text
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            text = _SOLUTION_MD.sub("*Your answer here.*", text)
            text = _MARKER_NOTE.sub("in place of `# YOUR CODE HERE` and the `raise NotImplementedError` line", text)
            cell.source = _embed_images(cell, text, source.parent)
    nb.metadata["minigpt"] = {"assignment": {"source": source.name,
                                             "exercises": {e.id: e.points for e in exercises}}}
    return nb


def _embed_images(cell, text: str, folder: Path) -> str:
    """Replace ``![alt](relative/path.svg)`` by an attachment, so the image travels with the file."""
    def attach(m: re.Match) -> str:
        path = (folder / m["path"]).resolve()
        if not path.is_file():
            return m[0]
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        cell.setdefault("attachments", {})[path.name] = {mime: base64.b64encode(path.read_bytes()).decode()}
        return f"![{m['alt']}](attachment:{path.name})"

    return _IMAGE.sub(attach, text)


def _companions(texts: list[str], folder: Path, out_dir: Path, released: set[str]) -> None:
    """Copy into ``out_dir`` the files of ``folder`` that ``texts`` link to, and those these link to
    in turn, so that the released notebooks' links work. Never a notebook with exercises that is not
    being released (it holds their answers), nor a file with solution or hidden-test markers (the
    instructor guide); a notebook goes with its outputs cleared and its images embedded."""
    import nbformat

    seen = set(released)
    while texts:
        for name in _LINK.findall(texts.pop()):
            src, dest = folder / name, out_dir / name
            if name in seen or not src.is_file() or dest.resolve() == src.resolve():
                continue
            seen.add(name)
            if src.suffix == ".md":
                text = src.read_text(encoding="utf-8")
                if BEGIN_SOLUTION in text or BEGIN_HIDDEN in text:
                    continue
                dest.write_text(text, encoding="utf-8")
                texts.append(text)
                continue
            nb = nbformat.read(src, as_version=4)
            if find_exercises(nb.cells) or any(has_solution(cell_source(c)) for c in nb.cells if c.cell_type == "code"):
                continue
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
                elif cell.cell_type == "markdown":
                    cell.source = _embed_images(cell, cell_source(cell), folder)
                    texts.append(cell.source)
            nbformat.write(nb, dest)


def release(sources: list[str | Path], out_dir: str | Path) -> list[Path]:
    """Write the student version of each notebook into ``out_dir`` (same file names), and beside
    them the answer-free files they link to (:func:`_companions`). Returns the student notebooks."""
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written, texts, folders = [], [], set()
    for src in map(Path, sources):
        if not src.is_file():
            raise AssignmentError(f"{src} does not exist; pass a notebook from notebooks/ (or --all)")
        nb = nbformat.read(src, as_version=4)
        student = student_notebook(nb, src)
        if (out_dir / src.name).resolve() == src.resolve():
            raise AssignmentError(f"--out {out_dir} would overwrite the solution notebook {src}; choose another folder")
        dest = out_dir / src.name
        tmp = dest.with_suffix(".ipynb.tmp")
        nbformat.write(student, tmp)
        tmp.replace(dest)
        written.append(dest)
        texts += [cell_source(c) for c in student.cells if c.cell_type == "markdown"]
        folders.add(src.parent)
    for folder in folders:
        _companions(list(texts), folder, out_dir, {p.name for p in written})
    return written


def nbgrader_notebook(nb, source: Path):
    """A copy of a solution notebook for nbgrader's ``source/`` folder.

    nbgrader's full pipeline needs cell metadata, and keeps answers and tests in separate cells:
    each exercise cell is split into an *autograded answer* cell (the code with its solution
    markers) and a locked *autograder tests* cell (the visible checks, then the hidden tests),
    worth the exercise's points. Outputs are kept; nothing else changes.
    """
    import copy

    import nbformat

    nb = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(nb.cells):
        text = cell_source(cell)
        head = exercise_header(text) if cell.cell_type == "code" else None
        if cell.cell_type == "markdown":  # nbgrader takes any line mentioning a marker for a marker
            text = _MARKER_NOTE.sub("in place of `# YOUR CODE HERE` and the `raise NotImplementedError()` line", text)
            cell.source = _embed_images(cell, text, source.parent)
        if head is None:
            cells.append(cell)
            continue
        where = f"{source.name}, cell {i}"
        visible, hidden = split_hidden(text, where)
        suffix = check_suffix(text, where)
        answer = visible[: len(visible) - len(suffix)].rstrip() if suffix and visible.endswith(suffix) else visible
        tests = suffix + (f"\n\n{BEGIN_HIDDEN}\n{hidden}\n{END_HIDDEN}" if hidden else "")
        gid = "ex" + head[0].replace(".", "_")
        cell.source = _hints_outside(answer)
        cell.outputs = []
        cell.metadata["nbgrader"] = {"grade": False, "grade_id": gid + "_answer", "locked": False,
                                     "schema_version": 3, "solution": True, "task": False}
        test_cell = nbformat.v4.new_code_cell(tests or "pass")
        test_cell.metadata["nbgrader"] = {"grade": True, "grade_id": gid + "_tests", "locked": True,
                                          "points": head[2], "schema_version": 3, "solution": False,
                                          "task": False}
        cells += [cell, test_cell]
    nb.cells = cells
    return nb


def _hints_outside(source: str) -> str:
    """Move ``# Hint:`` lines from inside solution regions to just above them: nbgrader replaces a
    whole region by its stub, so hints inside it would not reach the students."""
    out: list[str] = []
    region: list[str] | None = None
    for line in source.splitlines():
        s = line.strip()
        if s == BEGIN_SOLUTION:
            region = [line]
        elif region is not None and s == "### END SOLUTION":
            hints = [ln for ln in region[1:] if ln.strip().lower().startswith("# hint:")]
            out += hints + [ln for ln in region if ln not in hints] + [line]
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    return "\n".join(out + (region or []))


def export_nbgrader(sources: list[str | Path], out_dir: str | Path) -> list[Path]:
    """Write :func:`nbgrader_notebook` copies into ``out_dir`` (e.g. ``source/ps02/``)."""
    import nbformat

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for src in map(Path, sources):
        dest = out_dir / src.name
        if dest.resolve() == src.resolve():
            raise AssignmentError(f"--out {out_dir} would overwrite the solution notebook {src}; choose another folder")
        nbformat.write(nbgrader_notebook(nbformat.read(src, as_version=4), src), dest)
        written.append(dest)
    return written
