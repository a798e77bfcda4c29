"""Grading time per submission for chapters 02 and 07 (issue 16: within 1.5x of the old grader).

Grades, one after another, for each chapter: the solution notebook (an honest full-marks
submission) and its released student version (every stub left in), and prints the wall time of
each ``grade`` call and whether the grader ran sandboxed. Run it on two checkouts to compare:

    python benchmarks/grading.py                              # this checkout
    PYTHONPATH=/path/to/other/checkout python benchmarks/grading.py --label before

Writes ``benchmarks/results/grading.json`` (merged by label) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "grading.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--label", default="now", help="name of this measurement in the results file")
    ap.add_argument("--chapters", nargs="*", default=["02_attention", "07_sampling"])
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)
    os.environ.setdefault("MINIGPT_PROGRESS", "0")
    from minigpt.assignments import grade, release

    import minigpt
    print(f"minigpt from {Path(minigpt.__file__).parent}", file=sys.stderr)
    notebooks = ROOT / "notebooks"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.chapters:
            src = notebooks / f"{name}.ipynb"
            (stub,) = release([src], Path(tmp) / "release")
            for kind, sub in (("solution", src), ("stubs", stub)):
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    rep = grade(sub, src)
                    dt = time.perf_counter() - t0
                    sandbox = getattr(rep, "sandbox", "none (old grader)")
                    rows.append({"chapter": name, "submission": kind, "seconds": round(dt, 2),
                                 "points": f"{rep.total:g}/{rep.max_points:g}", "sandbox": sandbox})
                    print(f"{name:<14} {kind:<9} {dt:6.1f} s  {rep.total:g}/{rep.max_points:g}  {sandbox}",
                          file=sys.stderr)
    record = {"label": args.label, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "cpus": os.cpu_count(), "python": platform.python_version(), "rows": rows}
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([r for r in old if r["label"] != args.label] + [record], indent=1) + "\n")
    print("| label | chapter | submission | seconds | points | sandbox |\n|---|---|---|---:|---|---|")
    for rec in json.loads(RESULTS.read_text()):
        for r in rec["rows"]:
            print(f"| {rec['label']} | {r['chapter']} | {r['submission']} | {r['seconds']} | {r['points']} | {r['sandbox']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
