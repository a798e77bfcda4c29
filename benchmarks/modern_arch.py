"""From GPT-2 to a modern LLM, one option at a time (chapter 09): the table, measured side by side.

The ladder, each rung adding one option to the one before (all are ``GPTConfig`` fields of the
same ``GPT``): GPT-2 -> +RMSNorm -> +RoPE -> +SwiGLU -> +GQA (n_kv_head = n_head / 2) -> all
(+ untied head, qk-norm, no biases: a Llama-style model). Character-level Shakespeare,
``minigpt.data``'s split by whole plays. For each rung and each seed (the seed sets the
initialisation and the batch order):

* parameters and KV-cache bytes per token (float32, ``GPTConfig.kv_cache_bytes_per_token``);
* training tokens per second of **CPU time** over a fixed number of steps S;
* validation loss after S steps (**same steps**);
* validation loss after the CPU time the GPT-2 rung of the same seed needed for its S steps
  (**same time**): a rung whose step costs c seconds (measured in its own S-step run) trains
  round(budget / c) steps, with its own warm-up + cosine schedule over exactly that many steps,
  so every schedule runs to its end. For GPT-2 that is S steps, the same run, so it is not
  repeated (single-thread CPU training is deterministic); likewise for any rung that lands on S.

Every step is :func:`minigpt.train.train`'s (``lr_at``, ``BatchSampler``, clipping, the fused AdamW
of ``configure_optimizer``), written out to keep evaluation off the clock.

Why CPU time, not wall time: this benchmark was written for a 2-core machine shared with other
jobs. Wall time measures the work *plus* the time spent waiting for a core; with one thread per
run (``torch.set_num_threads(1)``, the default) the process's CPU time (``time.process_time``)
measures the work alone, so tokens/s and the same-time budget do not depend on what else ran.
Wall time and the 1-minute load average before and after are recorded beside it. Runs execute in
``--workers`` processes at once (default 2, one per core), each single-threaded.

Validation loss: a fixed fifth of the val split (every 5th batch of 64 non-overlapping windows,
so all six val plays are represented; 131,072 tokens), the same windows for every run.

Beyond the training length (seed 0, GPT-2 and +RoPE rungs after their S steps, trained at
block_size 64): the val split cut into non-overlapping windows of 4x the training length (256);
the mean next-token loss at each position 0..255. Learned positions have a 64-row table, and
the package refuses longer inputs (its error message is recorded), so that model gets positions
0..63 and, as its fair alternative, a sliding window of 64 with stride 32 (positions >= 64 each
predicted from 33-64 tokens of context). The rotary model has no parameter sized by block_size,
so its weights are loaded unchanged (strict ``load_state_dict``) into a model built with
block_size 256 — the least invasive way past the package's length check.

Usage::

    python benchmarks/modern_arch.py                 # 200 steps x 3 seeds x 6 rungs (47 min wall on 2 busy cores; 25 min of training CPU time in all)
    python benchmarks/modern_arch.py --quick         # smoke run (< 1 min), written to a temp folder
    python benchmarks/modern_arch.py --steps 300 --seeds 0,1,2,3 --workers 1
    python benchmarks/modern_arch.py --table benchmarks/results/modern_arch.json   # the .md again from the .json

Writes ``benchmarks/results/modern_arch.json`` and ``.md`` (``--out`` to change; ``--quick``
never writes there unless ``--out`` says so).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import datetime
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from minigpt.config import GPTConfig
from minigpt.data import BatchSampler, encode_corpus, iter_eval_windows, shakespeare
from minigpt.optim import set_lr
from minigpt.tokenizer import CharTokenizer
from minigpt.train import TrainConfig, build_model, configure_optimizer, lr_at

RESULTS = Path(__file__).parent / "results"
BASE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0)
TRAIN = dict(batch_size=32, learning_rate=3e-3, min_lr=3e-4, weight_decay=0.1, beta2=0.99, grad_clip=1.0,
             fused=True)
LADDER = [
    ("GPT-2", {}),
    ("+RMSNorm", dict(norm="rmsnorm")),
    ("+RoPE", dict(pos_emb="rope")),
    ("+SwiGLU", dict(activation="swiglu")),
    ("+GQA", dict(n_kv_head=2)),
    ("all (+untied, qk-norm, no bias)", dict(tie_weights=False, qk_norm=True, bias=False)),
]
EVAL_BATCH = 64  # windows per validation batch
EVAL_LEN_FACTOR = 4  # length generalisation: windows of 4x the training length
SLIDE_STRIDE_FRAC = 2  # sliding window: stride = block_size // 2


def variants() -> list[tuple[str, dict]]:
    """Each rung's options: everything above it, plus its own."""
    out, acc = [], {}
    for name, opts in LADDER:
        acc = {**acc, **opts}
        out.append((name, dict(acc)))
    return out


def loadavg() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not on every platform
        return float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --- worker side -------------------------------------------------------------------------------

_DATA: dict = {}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    train_text, val_text = shakespeare("train"), shakespeare("val")
    tok = CharTokenizer.from_text(train_text + val_text)
    _DATA.update(vocab=tok.vocab_size, train=encode_corpus(train_text, tok), val=encode_corpus(val_text, tok))


@torch.no_grad()
def val_loss(model: torch.nn.Module, val: torch.Tensor, block_size: int, every: int) -> float:
    """Mean loss per token over every ``every``-th batch of non-overlapping val windows."""
    model.eval()
    total, count = 0.0, 0
    for i, (x, y) in enumerate(iter_eval_windows(val, block_size, EVAL_BATCH)):
        if i % every == 0:
            _, loss = model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    model.train()
    return total / count


def train_steps(cfg: GPTConfig, seed: int, steps: int, batch_size: int) -> tuple[torch.nn.Module, float, float]:
    """``steps`` optimizer steps of minigpt.train.train; returns (model, CPU s, wall s) of training."""
    tcfg = TrainConfig(max_iters=steps, warmup_iters=max(1, steps // 20), seed=seed,
                       **{**TRAIN, "batch_size": batch_size})
    model = build_model(cfg, seed=seed).train()
    opt = configure_optimizer(model, tcfg, torch.device("cpu"))
    data = BatchSampler(_DATA["train"], cfg.block_size, batch_size, seed=seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for step in range(steps):
        set_lr(opt, lr_at(step, tcfg))
        x, y = data.batch(step)
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, time.process_time() - cpu0, time.perf_counter() - wall0


@torch.no_grad()
def position_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Mean next-token loss at each position of windows x, y (N, T): a (T,) tensor."""
    model.eval()
    rows = []
    for i in range(0, len(x), batch):
        logits, _ = model(x[i:i + batch])
        rows.append(F.cross_entropy(logits.transpose(1, 2), y[i:i + batch], reduction="none"))
    return torch.cat(rows).mean(0)


@torch.no_grad()
def sliding_losses(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, window: int, stride: int) -> torch.Tensor:
    """Loss at each position of x (N, T) read through a sliding window of ``window`` tokens:
    positions < window from the first window, then each window moved by ``stride`` scores its
    last ``stride`` positions (each predicted from window - stride + 1 .. window tokens)."""
    T = x.size(1)
    out = torch.empty(T)
    out[:window] = position_losses(model, x[:, :window], y[:, :window])
    for start in range(stride, T - window + 1, stride):
        out[start + window - stride:start + window] = position_losses(
            model, x[:, start:start + window], y[:, start:start + window])[window - stride:]
    return out


def length_eval(model: torch.nn.Module, cfg: GPTConfig, max_windows: int | None) -> dict:
    """Loss by position beyond the training length (see the module docstring)."""
    T0 = cfg.block_size
    T = EVAL_LEN_FACTOR * T0
    val = _DATA["val"]
    n = (len(val) - 1) // T
    idx = torch.arange(n) if max_windows is None or max_windows >= n else torch.linspace(0, n - 1, max_windows).long()
    x = torch.stack([val[i * T:(i + 1) * T] for i in idx.tolist()])
    y = torch.stack([val[i * T + 1:(i + 1) * T + 1] for i in idx.tolist()])
    slide = sliding_losses(model, x, y, T0, T0 // SLIDE_STRIDE_FRAC)
    out = {"windows": len(x), "sliding_window": T0, "sliding_stride": T0 // SLIDE_STRIDE_FRAC,
           "sliding_loss_by_position": [round(v, 5) for v in slide.tolist()],
           "sliding_window_loss": round(slide.mean().item(), 5)}
    if cfg.pos_emb == "rope":
        long_cfg = GPTConfig(**{**cfg.to_dict(), "block_size": T})
        long_model = type(model)(long_cfg)
        long_model.load_state_dict(model.state_dict(), strict=True)  # no parameter depends on block_size
        out["loss_by_position"] = [round(v, 5) for v in position_losses(long_model, x, y).tolist()]
        out["how"] = (f"the trained weights loaded unchanged (strict load_state_dict) into a model built with "
                      f"block_size {T}: rotary positions have no parameter sized by block_size")
    else:
        out["loss_by_position"] = [round(v, 5) for v in position_losses(model, x[:, :T0], y[:, :T0]).tolist()]
        try:
            model(x[:1])
            out["error"] = None
        except ValueError as e:  # the package's one-line refusal
            out["error"] = str(e)
    return out


def run_one(job: dict) -> dict:
    """One training run: a rung, a seed, a number of steps; val loss (and length eval) off the clock."""
    cfg = GPTConfig(vocab_size=_DATA["vocab"], **job["base"], **job["options"])
    load0 = loadavg()
    model, cpu_s, wall_s = train_steps(cfg, job["seed"], job["steps"], job["batch_size"])
    res = dict(name=job["name"], seed=job["seed"], steps=job["steps"], cpu_s=cpu_s, wall_s=wall_s,
               load_before=load0, load_after=loadavg(), params=model.num_params(),
               kv_bytes_per_token=cfg.kv_cache_bytes_per_token(4),
               val_loss=val_loss(model, _DATA["val"], cfg.block_size, job["val_every"]))
    if job.get("length"):
        res["length"] = length_eval(model, cfg, job["length_windows"])
    return res


# --- driver ------------------------------------------------------------------------------------

def run_jobs(jobs: list[dict], pool: cf.Executor | None, threads: int, log) -> list[dict]:
    """Run jobs in ``pool`` (or here, one after another, when it is None); results in job order."""
    if pool is None:
        if not _DATA:
            _init_worker(threads)
        out = []
        for j in jobs:
            out.append(run_one(j))
            log(_line(out[-1]))
        return out
    out = [None] * len(jobs)
    futs = {pool.submit(run_one, j): i for i, j in enumerate(jobs)}
    for f in cf.as_completed(futs):
        out[futs[f]] = f.result()
        log(_line(out[futs[f]]))
    return out


def _line(r: dict) -> str:
    return (f"{r['name']:<32} seed {r['seed']} {r['steps']:>4} steps  cpu {r['cpu_s']:7.1f} s  "
            f"wall {r['wall_s']:7.1f} s  val {r['val_loss']:.4f}  load {r['load_before']}->{r['load_after']}")


def mean_spread(xs: list[float], digits: int) -> str:
    """'mean (min–max)' with ``digits`` decimals (thousands separated)."""
    m = statistics.fmean(xs)
    if len(xs) == 1:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({min(xs):,.{digits}f} – {max(xs):,.{digits}f})"


def signed_spread(xs: list[float], digits: int) -> str:
    """A difference: '+0.012 (−0.003 … +0.020)', signs always shown, minus as U+2212."""
    f = (lambda x: f"{x:+.{digits}f}".replace("-", "\u2212"))
    return f(statistics.fmean(xs)) + ("" if len(xs) == 1 else f" ({f(min(xs))} … {f(max(xs))})")


def markdown(res: dict) -> str:
    st, vs = res["settings"], res["variants"]
    S = st["steps"]
    base = vs[0]
    lines = [
        f"Mean over seeds {', '.join(map(str, st['seeds']))} (min–max in brackets); Δ = the rung minus "
        f"GPT-2 of the same seed (paired), mean (min … max), negative = lower loss than GPT-2. "
        f"Tokens/s: single-thread CPU time.",
        "",
        f"| variant | params | KV bytes/token | tokens/s | val loss @ {S} steps | Δ vs GPT-2 | "
        f"val loss @ GPT-2's CPU time | Δ vs GPT-2 | steps in that time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in vs:
        d1 = [a - b for a, b in zip(v["val_loss_steps"], base["val_loss_steps"])]
        d2 = [a - b for a, b in zip(v["val_loss_time"], base["val_loss_time"])]
        dd = (lambda d: "—" if v is base else signed_spread(d, 3))
        lines.append(
            f"| {v['name']} | {v['params']:,} | {v['kv_bytes_per_token']:,} | "
            f"{mean_spread(v['tokens_per_s'], 0)} | {mean_spread(v['val_loss_steps'], 3)} | {dd(d1)} | "
            f"{mean_spread(v['val_loss_time'], 3)} | {dd(d2)} | "
            f"{'–'.join(sorted({str(min(v['steps_in_time'])), str(max(v['steps_in_time']))}, key=int))} |")
    ln = res["length"]
    rope, learned = ln["rope"]["loss_by_position"], ln["learned"]
    T0 = ln["train_len"]
    mean = statistics.fmean
    lines += [
        "",
        f"Beyond the training length (seed 0, trained at {T0}, {ln['rope']['windows']} val windows of "
        f"{ln['eval_len']}): +RoPE's mean loss at positions 0–{T0 - 1} is {mean(rope[:T0]):.3f} and at "
        f"{T0}–{ln['eval_len'] - 1} {mean(rope[T0:]):.3f} (last {T0} positions {mean(rope[-T0:]):.3f}); "
        f"over all {ln['eval_len']} positions {mean(rope):.3f}, against {ln['rope']['sliding_window_loss']:.3f} "
        f"through a sliding window of {T0}. GPT-2 (learned positions): positions 0–{T0 - 1} "
        f"{mean(learned['loss_by_position']):.3f}; longer input is refused (\"{learned['error']}\"); through a "
        f"sliding window of {T0} (stride {ln['learned']['sliding_stride']}) its mean over the "
        f"{ln['eval_len']} positions is {learned['sliding_window_loss']:.3f}.",
        "",
        f"Machine: {res['machine']['cpu']}, torch {res['machine']['torch']}, {res['machine']['threads']} thread "
        f"per run, {st['workers']} run(s) at once; load {res['machine']['load_before']} → "
        f"{res['machine']['load_after']}; {res['machine']['wall_s'] / 60:.1f} min wall; {res['machine']['date']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny model, a few steps, 2 seeds, val/40")
    ap.add_argument("--steps", type=int, default=None, help="S, the fixed number of steps (default 200)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1: CPU time = work)")
    ap.add_argument("--workers", type=int, default=None, help="runs at once (default 2; 1 = in this process)")
    ap.add_argument("--n-layer", type=int, default=None)
    ap.add_argument("--n-embd", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--length-windows", type=int, default=None,
                    help="at most this many val windows of 4x block_size for the length test (default: all)")
    ap.add_argument("--table", type=Path, default=None,
                    help="print (and rewrite beside it) the .md table of a stored .json, without training")
    ap.add_argument("--out", type=Path, default=None,
                    help="output path without suffix (default benchmarks/results/modern_arch; --quick: a temp folder)")
    args = ap.parse_args(argv)
    if args.table:
        res = json.loads(args.table.read_text())
        args.table.with_suffix(".md").write_text(markdown(res))
        print(markdown(res), end="")
        return res
    q = args.quick
    steps = args.steps or (6 if q else 200)
    seeds = [int(s) for s in (args.seeds or ("0,1" if q else "0,1,2")).split(",")]
    workers = args.workers or (1 if q else 2)
    base = dict(BASE, **(dict(n_layer=1, n_embd=32) if q else {}))
    if args.n_layer:
        base["n_layer"] = args.n_layer
    if args.n_embd:
        base["n_embd"] = args.n_embd
    batch_size = args.batch_size or (8 if q else TRAIN["batch_size"])
    val_every = 40 if q else 5
    length_windows = args.length_windows or (16 if q else None)
    out = args.out or (Path(tempfile.gettempdir()) / "minigpt_modern_arch_quick" if q else RESULTS / "modern_arch")
    if steps < 1 or not seeds or workers < 1 or args.threads < 1:
        ap.error("--steps, --workers and --threads must be >= 1 and --seeds must name at least one seed")

    def log(s: str) -> None:
        print(s, flush=True)

    torch.set_num_threads(args.threads)
    date = datetime.date.today().isoformat()
    load_before, wall0 = loadavg(), time.perf_counter()
    log(f"{cpu_model()}, torch {torch.__version__}, {args.threads} thread(s) x {workers} worker(s), "
        f"load {load_before}; S = {steps}, seeds {seeds}")
    vlist = variants()
    common = dict(base=base, batch_size=batch_size, val_every=val_every, length_windows=length_windows)

    # Phase 1: every rung and seed for S steps (seed 0 of GPT-2 and +RoPE also get the length test).
    jobs1 = [dict(common, name=n, options=o, seed=s, steps=steps, length=(s == seeds[0] and n in ("GPT-2", "+RoPE")))
             for s in seeds for n, o in vlist]
    pool = (cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                                   initargs=(args.threads,)) if workers > 1 else None)
    r1 = run_jobs(jobs1, pool, args.threads, log)
    fixed = {(r["name"], r["seed"]): r for r in r1}

    # Phase 2: the same CPU time as GPT-2 of the same seed; each rung's own full schedule.
    n_time = {}
    for n, _ in vlist:
        for s in seeds:
            budget = fixed[("GPT-2", s)]["cpu_s"]
            per_step = fixed[(n, s)]["cpu_s"] / steps
            n_time[(n, s)] = max(1, round(budget / per_step))
    jobs2 = [dict(common, name=n, options=o, seed=s, steps=n_time[(n, s)])
             for s in seeds for n, o in vlist if n_time[(n, s)] != steps]
    r2 = run_jobs(jobs2, pool, args.threads, log)
    if pool is not None:
        pool.shutdown()
    timed = {(r["name"], r["seed"]): r for r in r2}

    variants_out = []
    for n, o in vlist:
        rows = [fixed[(n, s)] for s in seeds]
        trow = [timed.get((n, s), fixed[(n, s)]) for s in seeds]
        variants_out.append({
            "name": n, "options": o, "params": rows[0]["params"], "kv_bytes_per_token": rows[0]["kv_bytes_per_token"],
            "tokens_per_s": [round(steps * batch_size * base["block_size"] / r["cpu_s"], 1) for r in rows],
            "val_loss_steps": [round(r["val_loss"], 5) for r in rows],
            "val_loss_time": [round(r["val_loss"], 5) for r in trow],
            "steps_in_time": [n_time[(n, s)] for s in seeds],
            "cpu_s_steps": [round(r["cpu_s"], 2) for r in rows],
            "wall_s_steps": [round(r["wall_s"], 2) for r in rows],
            "cpu_s_time": [round(r["cpu_s"], 2) for r in trow],
            "load_during_steps": [[r["load_before"], r["load_after"]] for r in rows],
        })
    gl, rl = fixed[("GPT-2", seeds[0])]["length"], fixed[("+RoPE", seeds[0])]["length"]
    T0 = base["block_size"]
    res = {
        "machine": {"cpu": cpu_model(), "torch": str(torch.__version__), "threads": args.threads,
                    "load_before": load_before, "load_after": loadavg(),
                    "wall_s": round(time.perf_counter() - wall0, 1), "date": date,
                    "python": platform.python_version(), "cores": os.cpu_count()},
        "settings": {
            "steps": steps, "block_size": T0, "batch_size": batch_size, "seeds": seeds, "base": base,
            "workers": workers, "train": {**TRAIN, "batch_size": batch_size, "warmup_iters": "max(1, steps // 20)",
                                          "lr_schedule": "cosine"},
            "val": f"every {val_every}th batch of {EVAL_BATCH} non-overlapping val windows of {T0} tokens, "
                   f"the same for every run",
            "budget": (f"same time = the CPU time (time.process_time, {args.threads} thread) that GPT-2 of the same "
                       f"seed took for its {steps} steps; each rung trains round(budget / its own CPU s per step "
                       f"from its {steps}-step run) steps, with warm-up and cosine decay over exactly those steps; "
                       f"runs that land on {steps} steps reuse the {steps}-step run (deterministic)"),
            "spread": "per-seed lists; tables show mean and min–max over seeds",
        },
        "variants": variants_out,
        "length": {
            "train_len": T0, "eval_len": EVAL_LEN_FACTOR * T0, "seed": seeds[0], "steps": steps,
            "rope": {k: rl[k] for k in ("loss_by_position", "sliding_window_loss", "sliding_loss_by_position",
                                         "sliding_window", "sliding_stride", "windows", "how")},
            "learned": {k: gl[k] for k in ("loss_by_position", "sliding_window_loss", "sliding_loss_by_position",
                                            "sliding_window", "sliding_stride", "windows", "error")},
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    log("\n" + md)
    log(f"wrote {out.with_suffix('.json')} and .md")
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
