"""Grade files: one row per submission, written as soon as it is graded.

Each row is added atomically (temporary file, then rename) under a lock, so rows survive a crash
later in the batch and parallel graders do not interleave; a CSV whose header belongs to another
chapter is refused before anything is graded, since its columns would misalign.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .markers import AssignmentError, find_exercises

if TYPE_CHECKING:
    from .grade import GradeReport


@contextmanager
def _locked(path: Path):
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def append_row(report: GradeReport, path: str | Path) -> None:
    """Add one submission to a CSV file (or a JSON list, for ``.json``), atomically and under a
    lock, so rows survive a crash later in the batch and parallel graders do not interleave. A
    CSV whose header is not this chapter's columns is refused (its columns would misalign)."""
    path = Path(path)
    with _locked(path):
        if path.suffix == ".json":
            old = json.loads(path.read_text(encoding="utf-8")) if path.exists() and path.stat().st_size else []
            if not isinstance(old, list):
                raise AssignmentError(f"{path} does not hold a JSON list of grades; choose another --json file")
            _replace(path, json.dumps(old + [report.to_json()], indent=1, ensure_ascii=False) + "\n")
            return
        row = report.row()
        fields = list(row)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old.strip():
            header = next(csv.reader([old.splitlines()[0]]))
            if header != fields:
                raise AssignmentError(f"{path} has the columns {','.join(header)}, but {Path(report.source).name} "
                                      f"grades into {','.join(fields)}; use one CSV file per chapter")
        else:
            old = ""
            writer.writeheader()
        writer.writerow(row)
        if old and not old.endswith("\n"):
            old += "\n"
        _replace(path, old + buf.getvalue())


def check_grade_file(path: str | Path, source: Path) -> None:
    """Refuse, before grading anything, a CSV whose header belongs to another chapter."""
    import nbformat

    path = Path(path)
    if path.suffix == ".json" or not path.exists() or not path.read_text(encoding="utf-8").strip():
        return
    header = next(csv.reader([path.read_text(encoding="utf-8").splitlines()[0]]))
    ids = [e.id for e in find_exercises(nbformat.read(source, as_version=4).cells)]
    if header != ["submission", "notebook", "total", "max", *ids]:
        raise AssignmentError(f"{path} has the columns {','.join(header)}, which are not those of {source.name} "
                              f"(submission,notebook,total,max,{','.join(ids)}); use one CSV file per chapter")


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_rows(reports: list[GradeReport], path: str | Path) -> None:
    """Append each report to a CSV (or JSON) grade file; see :func:`append_row`."""
    for r in reports:
        append_row(r, path)
