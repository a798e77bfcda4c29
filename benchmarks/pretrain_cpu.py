"""Training speed and quality on CPU: the classic nanoGPT recipe vs a tuned one, side by side.

Both variants train a character-level GPT on the Shakespeare corpus (``minigpt.data``'s
train/val split by whole plays, vocabulary = every character of the whole corpus). Reported for
each: training tokens/s, validation loss on the WHOLE val split (``minigpt.train.evaluate``)
against wall-clock *training* seconds (evaluation excluded from that clock), and the training
time at which the tuned recipe reaches the baseline's final val loss (linear interpolation
between evaluation points).

The machine this was written on has 2 cores shared with other jobs, so the two variants are
interleaved: the scheduler always advances the variant that is least far through its own run,
a few seconds at a time, so both see the same contention over the same period. The load
average is recorded at every evaluation.

Each optimizer step is the one of :func:`minigpt.train.train` (same ``lr_at`` schedule, same
``BatchSampler`` batches, same dropout seeding, clip, fused AdamW from ``configure_optimizer``),
written out here only so that two runs can be interleaved and evaluation kept off the clock.
``--check-train N`` runs the package's own ``train()`` for N steps beside this loop and checks
that both give the same losses (bit for bit) and the same tokens/s.

Usage::

    python benchmarks/pretrain_cpu.py              # the full benchmark (~15 min on a quiet 2-core CPU)
    python benchmarks/pretrain_cpu.py --quick      # smoke run: 1/20 of the steps, val on 1/10
    python benchmarks/pretrain_cpu.py --check-train 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minigpt.config import GPTConfig
from minigpt.data import BatchSampler, encode_corpus, shakespeare
from minigpt.tokenizer import CharTokenizer
from minigpt.optim import set_lr
from minigpt.train import TrainConfig, build_model, configure_optimizer, evaluate, lr_at

RESULTS = Path(__file__).parent / "results"

# The classic nanoGPT CPU recipe (config/train_shakespeare_char.py with the README's CPU overrides).
BASELINE = dict(
    model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    train=dict(max_iters=2000, batch_size=12, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
               beta2=0.99, weight_decay=0.1, grad_clip=1.0, fused=True),
    threads=2,
)
# The first tuned recipe (2026-11-29): fewer layers, bigger batches, a higher learning rate.
TUNED_V1 = dict(
    model=dict(n_layer=3, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    train=dict(max_iters=550, batch_size=32, learning_rate=6e-3, min_lr=6e-4, warmup_iters=30,
               beta2=0.99, weight_decay=0.1, grad_clip=1.0, fused=True),
    threads=2,
)
# The speed-run recipe (2026-11-30): TUNED_V1's model and batch, trained with Muon on the blocks'
# matrices and a warmup-stable-decay schedule down to 0, in fewer steps. benchmarks/README.md
# logs what each change bought.
TUNED = dict(
    model=dict(n_layer=3, n_head=4, n_embd=128, block_size=64, dropout=0.0),
    train=dict(max_iters=200, batch_size=32, learning_rate=1e-2, min_lr=0.0, warmup_iters=15,
               lr_schedule="wsd", cooldown_frac=0.4, optimizer="muon", muon_lr=0.03, muon_momentum=0.85,
               beta2=0.99, weight_decay=0.0, grad_clip=1.0, fused=True),
    threads=2,
)
SPECS = {"baseline": {**BASELINE, "evals": 2}, "tuned-v1": {**TUNED_V1, "evals": 3}, "tuned": {**TUNED, "evals": 4}}
TARGET_FRACTION = 0.33  # issue 19: the tuned recipe reaches the baseline's final loss in <= 0.33 of its time


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@dataclass
class Run:
    """One variant being trained: model, optimizer, and what has been measured so far."""

    name: str
    gcfg: GPTConfig
    tcfg: TrainConfig
    threads: int
    eval_at: list[int]
    step: int = 0
    train_s: float = 0.0
    losses: list[float] = field(default_factory=list)
    slice_tps: list[float] = field(default_factory=list)  # tokens/s of each interleaved slice
    evals: list[dict] = field(default_factory=list)
    eval_s: float = 0.0

    def __post_init__(self) -> None:
        self.model = build_model(self.gcfg, seed=self.tcfg.seed)
        self.model.train()
        self.opt = configure_optimizer(self.model, self.tcfg, torch.device("cpu"))
        self.tokens_per_step = self.tcfg.batch_size * self.gcfg.block_size

    @property
    def done(self) -> bool:
        return self.step >= self.tcfg.max_iters

    @property
    def progress(self) -> float:
        return self.step / self.tcfg.max_iters

    def one_step(self, sampler: BatchSampler) -> None:
        """Exactly one optimizer step of minigpt.train.train (grad_accum=1, float32, CPU)."""
        cfg, step = self.tcfg, self.step
        set_lr(self.opt, lr_at(step, cfg))  # x each group's lr_scale, as train()
        torch.manual_seed(cfg.seed + 1_000_003 * (step + 1))  # dropout masks keyed by step, as train()
        x, y = sampler.batch(step)
        _, loss = self.model(x, y)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.losses.append(loss.item())
        self.step += 1

    def run_slice(self, sampler: BatchSampler, seconds: float, val: torch.Tensor, eval_batch: int,
                  log) -> None:
        torch.set_num_threads(self.threads)
        t_slice, n0 = 0.0, self.step
        while not self.done and t_slice < seconds:
            t = time.perf_counter()
            self.one_step(sampler)
            dt = time.perf_counter() - t
            t_slice += dt
            self.train_s += dt
            if self.step in self.eval_at:
                break
        if self.step > n0:
            self.slice_tps.append((self.step - n0) * self.tokens_per_step / t_slice)
        if self.step in self.eval_at and not any(e["iter"] == self.step for e in self.evals):
            self.do_eval(val, eval_batch, log)

    def record(self) -> dict:
        """What the report needs, as plain data (also what a --parallel worker sends back)."""
        return {"name": self.name, "model": self.gcfg.to_dict(), "train": self.tcfg.to_dict(), "threads": self.threads,
                "params": self.model.num_params(), "tokens_per_step": self.tokens_per_step, "step": self.step,
                "train_s": self.train_s, "eval_s": self.eval_s, "slice_tps": self.slice_tps, "evals": self.evals}

    def do_eval(self, val: torch.Tensor, eval_batch: int, log) -> None:
        t = time.perf_counter()
        v = evaluate(self.model, val, self.gcfg.block_size, eval_batch)
        dt = time.perf_counter() - t
        self.eval_s += dt
        rec = {"iter": self.step, "train_s": round(self.train_s, 2), "val_loss": round(v, 4),
               "train_loss_recent": round(statistics.fmean(self.losses[-50:]), 4) if self.losses else None,
               "tokens_seen": self.step * self.tokens_per_step, "eval_s": round(dt, 1), "load1": round(loadavg(), 2)}
        self.evals.append(rec)
        log(f"  [{self.name:8s}] iter {self.step:5d}  train {self.train_s:7.1f}s  val {v:.4f}  "
            f"(eval {dt:.0f}s, load {rec['load1']:.1f})")


def time_to_reach(evals: list[dict], target: float) -> float | None:
    """Training seconds at which val loss first reaches ``target`` (linear interpolation)."""
    prev = None
    for e in evals:
        if e["val_loss"] <= target:
            if prev is None:
                return e["train_s"]
            (t0, v0), (t1, v1) = (prev["train_s"], prev["val_loss"]), (e["train_s"], e["val_loss"])
            return t0 + (t1 - t0) * (v0 - target) / (v0 - v1) if v0 != v1 else t1
        prev = e
    return None


def eval_points(max_iters: int, n: int) -> list[int]:
    return sorted({max(1, round(max_iters * k / n)) for k in range(1, n + 1)})


def make_run(name: str, spec: dict, vocab: int, iters_scale: float, n_evals: int) -> Run:
    """A run of ``spec``; a name ``variant@seed`` sets the seed (initialisation, batches, dropout)."""
    g = GPTConfig(vocab_size=vocab, **spec["model"])
    t = dict(spec["train"])
    if "@" in name:
        t["seed"] = int(name.split("@")[1])
    n_evals = spec.get("evals", n_evals)
    if iters_scale != 1.0:
        t["max_iters"] = max(10, round(t["max_iters"] * iters_scale))
        t["warmup_iters"] = max(1, round(t["warmup_iters"] * iters_scale))
    tc = TrainConfig(**t)
    return Run(name, g, tc, spec["threads"], eval_points(tc.max_iters, n_evals))


def check_train(n: int, train: torch.Tensor, vocab: int, log, spec: dict = BASELINE) -> dict:
    """The package's train() vs this loop on the first n baseline steps: same losses, same tokens/s."""
    from minigpt.train import train as pkg_train

    os.environ.setdefault("MINIGPT_PROGRESS", "0")
    out = {"steps": n, "loop_tps": [], "train_tps": []}
    for rep in range(2):  # interleaved: loop, train(), loop, train()
        r = make_run("loop", {**spec, "train": {**spec["train"], "max_iters": n}}, vocab, 1.0, 1)
        torch.set_num_threads(spec["threads"])
        sampler = BatchSampler(train, r.gcfg.block_size, r.tcfg.batch_size, seed=r.tcfg.seed)
        for _ in range(n):
            t = time.perf_counter()
            r.one_step(sampler)
            r.train_s += time.perf_counter() - t
        out["loop_tps"].append(n * r.tokens_per_step / r.train_s)
        model = build_model(r.gcfg, seed=r.tcfg.seed)
        tcfg = TrainConfig(**{**spec["train"], "max_iters": n, "eval_interval": 0, "train_eval_batches": 1,
                              "threads": spec["threads"], "device": "cpu"})
        hist = pkg_train(model, train, None, tcfg)
        out["train_tps"].append(hist.evals[-1]["tokens_per_s"])
        pkg_losses = [s["loss"] for s in hist.steps]
        out["losses_identical"] = pkg_losses == r.losses  # same schedule, batches, seeds: same losses
        log(f"  check-train rep {rep}: loop {out['loop_tps'][-1]:.0f} tok/s, train() {out['train_tps'][-1]:.0f} tok/s, "
            f"losses identical: {out['losses_identical']}  (load {loadavg():.1f})")
    out["ratio_train_over_loop"] = statistics.median(out["train_tps"]) / statistics.median(out["loop_tps"])
    return out


def train_variants(names: list[str], specs: dict, vocab: int, scale: float, n_evals: int, slice_s: float,
                   eval_batch: int, train: torch.Tensor, val: torch.Tensor, log) -> list[dict]:
    """Train the variants interleaved in this process; returns one record per variant."""
    runs = [make_run(n, specs[n.split("@")[0]], vocab, scale, n_evals) for n in names]
    samplers = {r.name: BatchSampler(train, r.gcfg.block_size, r.tcfg.batch_size, seed=r.tcfg.seed) for r in runs}
    for r in runs:
        log(f"  {r.name}: {r.gcfg.n_layer}L {r.gcfg.n_head}H {r.gcfg.n_embd}C ctx {r.gcfg.block_size}, "
            f"batch {r.tcfg.batch_size}, lr {r.tcfg.learning_rate:g}->{r.tcfg.min_lr:g}, warmup {r.tcfg.warmup_iters}, "
            f"{r.tcfg.max_iters} iters, {r.threads} threads, {r.model.num_params():,} params, evals at {r.eval_at}")
    while not all(r.done for r in runs):  # advance the variant least far through its run
        r = min((r for r in runs if not r.done), key=lambda r: r.progress)
        r.run_slice(samplers[r.name], slice_s, val, eval_batch, log)
    return [r.record() for r in runs]


def _worker(args: tuple) -> list[dict]:
    name, specs, scale, n_evals, slice_s, eval_batch, quick = args
    torch.set_num_threads(specs[name.split("@")[0]]["threads"])
    tok, train, val = load_data(quick)
    return train_variants([name], specs, tok.vocab_size, scale, n_evals, slice_s, eval_batch, train, val,
                          lambda s: print(s, flush=True))


def load_data(quick: bool):
    tok = CharTokenizer.from_text(shakespeare("all"))
    train = encode_corpus(shakespeare("train"), tok)
    val = encode_corpus(shakespeare("val"), tok)
    return tok, train, (val[: len(val) // 10] if quick else val)


def fmt_table(rows: list[list[str]], header: list[str]) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(n) for x, n in zip(r, w)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (n + 2) for n in w) + "|"] + [line(r) for r in rows])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1/20 of the steps, 1/10 of val")
    p.add_argument("--iters-scale", type=float, default=None, help="scale both variants' max_iters")
    p.add_argument("--variants", default="baseline,tuned-v1,tuned", help=f"comma-separated, of {list(SPECS)}")
    p.add_argument("--seeds", default="1337,1338", help="each variant runs once per seed (comma-separated)")
    p.add_argument("--evals", type=int, default=5, help="full-val evaluations per variant")
    p.add_argument("--slice", type=float, default=5.0, help="seconds of training per interleaved slice")
    p.add_argument("--eval-batch", type=int, default=64, help="windows per eval batch (does not change the loss)")
    p.add_argument("--check-train", type=int, default=0, metavar="N",
                   help="also run the package's train() for N steps and compare with this loop")
    p.add_argument("--parallel", action="store_true",
                   help="train each variant in its own process at the same time (1 thread each suits a 2-core CPU)")
    p.add_argument("--threads", type=int, default=None, help="override every variant's thread count")
    p.add_argument("--tuned-config", default=None, help="JSON file {model, train, threads} replacing TUNED")
    p.add_argument("--out", default=str(RESULTS / "pretrain_cpu"), help="results path without extension")
    a = p.parse_args(argv)

    lines: list[str] = []

    def log(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    torch.set_num_threads(2)
    tok, train, val = load_data(a.quick)
    scale = a.iters_scale if a.iters_scale is not None else (0.05 if a.quick else 1.0)
    specs = dict(SPECS)
    if a.tuned_config:
        specs["tuned"] = json.loads(Path(a.tuned_config).read_text())
    if a.threads:
        specs = {k: {**v, "threads": a.threads} for k, v in specs.items()}
    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    names = [f"{n.strip()}@{sd}" for sd in seeds for n in a.variants.split(",") if n.strip()]
    unknown = sorted({n.split("@")[0] for n in names} - set(specs))
    if unknown:
        p.error(f"--variants: unknown {unknown}; known: {sorted(specs)}")
    log(f"pretrain_cpu: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, vocab {tok.vocab_size}, train {len(train):,} tokens, val {len(val):,} tokens "
        f"(full split{'/10, --quick' if a.quick else ''}), iters x{scale}")
    load_start = loadavg()
    log(f"load average at start: {os.getloadavg()}")
    t_wall = time.perf_counter()

    check = check_train(a.check_train, train, tok.vocab_size, log, specs["baseline"]) if a.check_train else None

    if a.parallel:  # one process per variant, running at the same time (so under the same load)
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(len(names)) as pool:
            jobs = [(n, specs, scale, a.evals, a.slice, a.eval_batch, a.quick) for n in names]
            runs = [rec for recs in pool.map(_worker, jobs) for rec in recs]
    else:
        runs = train_variants(names, specs, tok.vocab_size, scale, a.evals, a.slice, a.eval_batch, train, val, log)
    wall = time.perf_counter() - t_wall
    load_end = loadavg()

    seeds = sorted({r["name"].split("@")[1] for r in runs if "@" in r["name"]}) or [None]

    def base_of(name: str) -> dict | None:  # the baseline run with the same seed
        want = "baseline" + (f"@{name.split('@')[1]}" if "@" in name else "")
        return next((r for r in runs if r["name"] == want), None)

    results = {"torch": torch.__version__, "cpus": os.cpu_count(), "quick": a.quick, "iters_scale": scale,
               "parallel": a.parallel, "val_tokens": len(val), "load1_start": load_start, "load1_end": load_end,
               "benchmark_wall_s": round(wall, 1), "check_train": check, "variants": {}}
    rows = []
    for r in runs:
        g, t, ev = r["model"], r["train"], r["evals"]
        tps = statistics.median(r["slice_tps"])
        spread = (min(r["slice_tps"]), max(r["slice_tps"]))
        base = base_of(r["name"])
        target = base["evals"][-1]["val_loss"] if base else None
        reach = time_to_reach(ev, target) if target is not None else None
        loads = [e["load1"] for e in ev]
        results["variants"][r["name"]] = {
            "model": g, "train": t, "threads": r["threads"], "params": r["params"],
            "tokens_per_step": r["tokens_per_step"], "tokens_per_s_median": round(tps),
            "tokens_per_s_overall": round(r["step"] * r["tokens_per_step"] / r["train_s"]),
            "tokens_per_s_slice_min_max": [round(x) for x in spread], "train_s": round(r["train_s"], 1),
            "eval_s_total": round(r["eval_s"], 1), "final_val_loss": ev[-1]["val_loss"], "evals": ev,
            "baseline_final_val_loss": target, "time_to_baseline_final_s": None if reach is None else round(reach, 1),
            "time_fraction": None if reach is None or not base else round(reach / base["train_s"], 3)}
        opt = t.get("optimizer", "adamw") + (f" {t['muon_lr']:g}/" if t.get("optimizer") == "muon" else " ")
        rows.append([r["name"], f"{g['n_layer']}L/{g['n_head']}H/{g['n_embd']}C, ctx {g['block_size']}",
                     f"{t['batch_size']} x {t['max_iters']}", f"{opt}{t['learning_rate']:g}, {t.get('lr_schedule', 'cosine')}",
                     f"{tps:,.0f} ({spread[0]:,.0f}-{spread[1]:,.0f})", f"{r['train_s']:.0f}",
                     f"{ev[-1]['val_loss']:.4f}", "-" if reach is None else f"{reach:.0f}",
                     "-" if reach is None or not base else f"{reach / base['train_s']:.2f}",
                     f"{min(loads):.1f}-{max(loads):.1f}"])
    header = ["run", "model", "batch x iters", "optimizer lr, schedule", "tokens/s median (slice range)", "train s",
              "final val loss", "s to baseline's final", "fraction of baseline's time", "load1"]
    table = fmt_table(rows, header)
    curve_rows = [[r["name"], e["iter"], f"{e['train_s']:.0f}", f"{e['val_loss']:.4f}", f"{e['load1']:.1f}"]
                  for r in runs for e in r["evals"]]
    curve = fmt_table(curve_rows, ["run", "iter", "train s", "val loss (full split)", "load1"])
    summary = []
    for v in dict.fromkeys(r["name"].split("@")[0] for r in runs):
        if v == "baseline":
            continue
        fr = [results["variants"][r["name"]]["time_fraction"] for r in runs if r["name"].split("@")[0] == v]
        if not fr or not base_of(next(r["name"] for r in runs if r["name"].split("@")[0] == v)):
            continue
        shown = ", ".join("never" if f is None else f"{f:.2f}" for f in fr)
        worst = None if None in fr else max(fr)
        line = f"{v}: reaches the baseline's final val loss after {shown} of the baseline's training time (per seed)"
        if v == "tuned":
            ok = worst is not None and worst <= TARGET_FRACTION
            line += f"; target <= {TARGET_FRACTION} on every seed: {'MET' if ok else 'MISSED'}"
            results["tuned_time_fraction"] = worst
        summary.append(line)
    noise = {r["name"]: round((max(r["slice_tps"]) - min(r["slice_tps"])) / statistics.median(r["slice_tps"]), 2)
             for r in runs}
    results["slice_tps_range_over_median"] = noise
    summary.append(f"load average (1 min): {load_start:.1f} at start, {load_end:.1f} at end, on {os.cpu_count()} CPUs; "
                   f"slice tokens/s (max-min)/median: {noise}")
    if check:
        summary.append(f"package train() vs this loop: tokens/s ratio {check['ratio_train_over_loop']:.2f}, "
                       f"losses identical: {check['losses_identical']}")
    log("")
    log(table)
    log("")
    log(curve)
    for s in summary:
        log(s)
    results["summary"] = summary
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    md = [f"# pretrain_cpu ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs{', --quick' if a.quick else ''})", "", table, "", curve, ""]
    md += [f"- {s}" for s in summary]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
