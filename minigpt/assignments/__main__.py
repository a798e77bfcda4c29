"""``python -m minigpt.assignments release | grade`` — see :mod:`minigpt.assignments`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .grade import NOTEBOOKS, find_source, grade
from .gradefile import append_row, check_grade_file
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
    g.add_argument("--csv", help="append one row per submission to this CSV file, as soon as it is graded")
    g.add_argument("--json", help="append one record per submission to this JSON file, as soon as it is graded")
    g.add_argument("--feedback", metavar="DIR", help="write a Markdown feedback file per submission into DIR")
    g.add_argument("--draws", type=int, default=2, help="secret input sets per hidden check (default 2)")
    g.add_argument("--all-or-nothing", action="store_true",
                   help="an exercise scores its points only if every case passes (default: the share passed)")
    g.add_argument("--total-timeout", type=float, help="seconds for a whole submission (default 10 x --timeout)")
    g.add_argument("--no-sandbox", action="store_true", help="do not use bubblewrap even if it works (not advised)")
    g.add_argument("--require-sandbox", action="store_true", help="refuse to grade without bubblewrap")
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
        return _grade(args)
    except (AssignmentError, OSError, ValueError) as e:
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        print(f"minigpt.assignments: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def _grade(args) -> int:
    import nbformat

    from .sandbox import bwrap_status, sandbox_description

    if args.require_sandbox and bwrap_status()[0] is None:
        raise AssignmentError(f"--require-sandbox: {bwrap_status()[1]}; install it (apt-get install -y bubblewrap)")
    if args.csv and args.source:
        check_grade_file(args.csv, Path(args.source))
    print(f"sandbox: {sandbox_description(not args.no_sandbox)}", file=sys.stderr)
    feedback = Path(args.feedback) if args.feedback else None
    if feedback:
        feedback.mkdir(parents=True, exist_ok=True)
    rows = {"CSV": 0, "JSON": 0}
    for i, sub in enumerate(args.submissions):
        if args.csv and not args.source:  # refuse a CSV of another chapter before grading
            try:
                check_grade_file(args.csv, find_source(nbformat.read(sub, as_version=4), Path(sub), None, args.source_dir))
            except (OSError, ValueError) as e:
                if isinstance(e, AssignmentError) and "columns" in str(e):
                    raise
        rep = grade(sub, args.source, timeout=args.timeout, full=args.full, source_dir=args.source_dir,
                    draws=args.draws, all_or_nothing=args.all_or_nothing, total_timeout=args.total_timeout,
                    sandbox=not args.no_sandbox)
        if not args.quiet:
            print(rep.table() + "\n")
        for path, name in ((args.csv, "CSV"), (args.json, "JSON")):
            if path:
                append_row(rep, path)
                rows[name] += 1
        if feedback:
            out = feedback / f"{i:03d}_{Path(sub).parent.name}_{Path(sub).stem}.md"
            out.write_text(rep.feedback(), encoding="utf-8")
    for path, name in ((args.csv, "CSV"), (args.json, "JSON")):
        if path:
            print(f"{name}: {rows[name]} row(s) added to {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
