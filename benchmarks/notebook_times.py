"""How long each notebook takes to run top to bottom in a fresh kernel (the instructor guide's table).

Runs the notebooks one after another (never side by side) with nbclient, as a learner's
"Restart kernel and run all" would, and prints a Markdown table; writes
``benchmarks/results/notebook_times.{json,md}``.

    python benchmarks/notebook_times.py                    # every notebook
    python benchmarks/notebook_times.py 02_attention 05_pretraining
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1200, resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute(env={**os.environ, "MINIGPT_PROGRESS": "0"})
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="notebook names without .ipynb (default: all)")
    args = ap.parse_args(argv)
    paths = sorted((ROOT / "notebooks").glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
    rows = []
    for p in paths:
        load0 = os.getloadavg()[0]
        seconds = run(p)
        rows.append({"notebook": p.stem, "seconds": round(seconds, 1), "load_before": round(load0, 2),
                     "load_after": round(os.getloadavg()[0], 2)})
        print(f"{p.stem:<28} {seconds:7.1f} s  (load {load0:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    head = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, Python {platform.python_version()}, one notebook at a time.")
    table = ["| notebook | seconds, top to bottom | load average before → after |", "|---|---:|---|"]
    table += [f"| `{r['notebook']}` | {r['seconds']:.0f} | {r['load_before']:.1f} → {r['load_after']:.1f} |"
              for r in rows]
    md = head + "\n\n" + "\n".join(table) + "\n"
    print("\n" + md)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "notebook_times.md").write_text(md)
    (RESULTS / "notebook_times.json").write_text(json.dumps({"note": head, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
