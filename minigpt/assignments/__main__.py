"""``python -m minigpt.assignments release | grade`` — see :mod:`minigpt.assignments`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .grade import NOTEBOOKS, grade, write_rows
from .markers import AssignmentError, find_exercises
from .release import export_nbgrader, release


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"minigpt.assignments: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m minigpt.assignments", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("release", help="write student versions (stubs, no hidden tests, no outputs)")
    r.add_argument("notebooks", nargs="*", help="solution notebooks, e.g. notebooks/02_attention.ipynb")
    r.add_argument("--all", action="store_true", help=f"every notebook with exercises in {NOTEBOOKS}")
    r.add_argument("--out", required=True, help="folder for the student notebooks")
    x = sub.add_parser("nbgrader", help="copies with nbgrader cell metadata, for nbgrader's source/ folder")
    x.add_argument("notebooks", nargs="*", help="solution notebooks")
    x.add_argument("--all", action="store_true", help=f"every notebook with exercises in {NOTEBOOKS}")
    x.add_argument("--out", required=True, help="e.g. source/ps02 in an nbgrader course folder")
    g = sub.add_parser("grade", help="grade submitted notebooks: points per exercise")
    g.add_argument("submissions", nargs="+", help="student notebooks (.ipynb)")
    g.add_argument("--source", help="the solution notebook (default: from the submission's metadata or chapter)")
    g.add_argument("--source-dir", help=f"where solution notebooks are found (default {NOTEBOOKS})")
    g.add_argument("--timeout", type=int, default=120, help="seconds per cell (default 120)")
    g.add_argument("--full", action="store_true", help="run every cell, not only those the exercises need")
    g.add_argument("--csv", help="append one row per submission to this CSV file")
    g.add_argument("--json", help="append one record per submission to this JSON file")
    g.add_argument("--quiet", action="store_true", help="no table, only the files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("release", "nbgrader"):
            sources = [Path(n) for n in args.notebooks]
            if args.all:
                import nbformat

                sources += [p for p in sorted(NOTEBOOKS.glob("[0-9A-Z]*.ipynb"))
                            if find_exercises(nbformat.read(p, as_version=4).cells)]
            if not sources:
                raise AssignmentError("name the notebooks to release, or pass --all")
            for path in (release if args.command == "release" else export_nbgrader)(sources, args.out):
                print(f"wrote {path}")
            return 0
        reports = []
        for sub in args.submissions:
            rep = grade(sub, args.source, timeout=args.timeout, full=args.full, source_dir=args.source_dir)
            reports.append(rep)
            if not args.quiet:
                print(rep.table() + "\n")
        for path, name in ((args.csv, "CSV"), (args.json, "JSON")):
            if path:
                write_rows(reports, path)
                print(f"{name}: {len(reports)} row(s) added to {path}")
        return 0
    except (AssignmentError, OSError, ValueError) as e:
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        print(f"minigpt.assignments: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
