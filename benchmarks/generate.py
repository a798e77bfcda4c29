"""Generation speed: ``minigpt.sampling.generate`` with and without the KV cache.

The reference model (``minigpt.pretrained()``: 6 layers, 256 wide, BPE vocabulary 2048,
``block_size`` 512), batch 1, greedy decoding from a 1-token prompt, for 64, 256, 512 (= the full
context) and 640 new tokens. Medians over repeats, cached and uncached runs interleaved so that
both see the same load; the tokens of the two paths are compared.

Beyond the context (640 new tokens from a 1-token prompt): GPT-2 style models have learned
*absolute* position embeddings, so a cache cannot slide: once the sequence is longer than
``block_size`` every step recomputes the last ``block_size`` tokens with or without the cache.
The table shows the tokens/s of those steps alone, (n_640 - n_512) / (t_640 - t_512).

``--profile`` adds a breakdown of one cached full-context generation: time in the model's forward
vs the rest of the loop, and the top operators from ``torch.profiler``.

Usage::

    python benchmarks/generate.py                 # ~3 min on a quiet 2-core CPU
    python benchmarks/generate.py --quick         # 2 repeats
    python benchmarks/generate.py --threads 1 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import minigpt
from minigpt.sampling import generate

RESULTS = Path(__file__).parent / "results"


def loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def timed(model, prompt, n, use_cache):
    t = time.perf_counter()
    out = generate(model, prompt, n, do_sample=False, use_cache=use_cache)
    return time.perf_counter() - t, out


def profile(model, prompt, n: int, log) -> dict:
    """Where the time of one cached generation of n tokens goes."""
    calls = {"n": 0, "s": 0.0}
    orig = model.forward

    def counted(*a, **k):
        t = time.perf_counter()
        r = orig(*a, **k)
        calls["s"] += time.perf_counter() - t
        calls["n"] += 1
        return r

    model.forward = counted
    try:
        t = time.perf_counter()
        generate(model, prompt, n, do_sample=False, use_cache=True)
        total = time.perf_counter() - t
    finally:
        del model.forward
    from torch.profiler import ProfilerActivity, profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, prompt, n, do_sample=False, use_cache=True)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    res = {"total_s": round(total, 4), "forward_s": round(calls["s"], 4), "forward_calls": calls["n"],
           "forward_share": round(calls["s"] / total, 3), "per_token_ms": round(1000 * total / n, 3),
           "forward_per_token_ms": round(1000 * calls["s"] / n, 3)}
    log(f"profile, cached greedy {n} tokens: {res['per_token_ms']} ms/token, of which the model's forward "
        f"{res['forward_per_token_ms']} ms ({100 * res['forward_share']:.0f}%), the rest (logits processing, "
        f"argmax, torch.cat, Python) {res['per_token_ms'] - res['forward_per_token_ms']:.3f} ms")
    log(table)
    res["top_ops"] = table
    return res


def fmt_table(rows, header) -> str:
    w = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "| " + " | ".join(str(x).ljust(n) for x, n in zip(r, w)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (n + 2) for n in w) + "|"] + [line(r) for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default=None,
                   help="new tokens per run, comma separated (default 64, block_size/2, block_size, block_size+128)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="2 repeats")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="break down one cached full-context run")
    p.add_argument("--out", default=str(RESULTS / "generate"), help="results path without extension")
    a = p.parse_args(argv)
    repeats = 2 if a.quick else a.repeats

    def log(s: str) -> None:
        print(s, flush=True)

    torch.set_num_threads(a.threads)
    ckpt = minigpt.pretrained()
    model, tok = ckpt.model.eval(), ckpt.tokenizer
    prompt = torch.tensor([tok.encode("\n")[:1]], dtype=torch.long)  # 1 token, batch 1
    cfg = model.config
    bs = cfg.block_size
    lengths = [int(x) for x in a.lengths.split(",")] if a.lengths else [64, bs // 2, bs, bs + 128]
    log(f"generate: torch {torch.__version__}, {a.threads} threads, {os.cpu_count()} CPUs; reference model "
        f"{cfg.n_layer}L/{cfg.n_head}H/{cfg.n_embd}C, vocab {cfg.vocab_size}, block_size {cfg.block_size}, "
        f"{model.num_params():,} params; batch 1, greedy, 1-token prompt, {repeats} repeats; load {os.getloadavg()}")
    for use_cache in (True, False):  # warm-up
        generate(model, prompt, 8, do_sample=False, use_cache=use_cache)
    times = {(n, c): [] for n in lengths for c in (True, False)}
    identical = {}
    load = []
    for rep in range(repeats):
        for n in lengths:
            order = (True, False) if rep % 2 == 0 else (False, True)  # alternate which goes first
            outs = {}
            for c in order:
                t, outs[c] = timed(model, prompt, n, c)
                times[(n, c)].append(t)
            same = torch.equal(outs[True], outs[False])
            identical[n] = identical.get(n, True) and same
            load.append(loadavg())
        log(f"  repeat {rep + 1}/{repeats}: " + ", ".join(
            f"{n}: cached {times[(n, True)][-1]:.2f}s uncached {times[(n, False)][-1]:.2f}s" for n in lengths)
            + f"  (load {load[-1]:.1f})")
    med = {k: statistics.median(v) for k, v in times.items()}
    rows, res = [], {"torch": torch.__version__, "threads": a.threads, "cpus": os.cpu_count(), "repeats": repeats,
                     "model": cfg.to_dict(), "params": model.num_params(), "load1_min_max": [min(load), max(load)],
                     "lengths": {}}
    for n in lengths:
        tc, tu = med[(n, True)], med[(n, False)]
        spread = {c: (max(times[(n, c)]) - min(times[(n, c)])) / med[(n, c)] for c in (True, False)}
        note = "full context" if n == cfg.block_size else ("beyond context" if n > cfg.block_size else "")
        rows.append([f"{n} {('(' + note + ')') if note else ''}".strip(), f"{n / tc:,.0f}", f"{n / tu:,.0f}",
                     f"{tu / tc:.1f}x", "yes" if identical[n] else "NO",
                     f"{100 * spread[True]:.0f}% / {100 * spread[False]:.0f}%"])
        res["lengths"][str(n)] = {"cached_s_median": round(tc, 4), "uncached_s_median": round(tu, 4),
                                  "cached_tokens_per_s": round(n / tc, 1), "uncached_tokens_per_s": round(n / tu, 1),
                                  "speedup": round(tu / tc, 2), "identical_tokens": identical[n],
                                  "cached_s_all": [round(x, 4) for x in times[(n, True)]],
                                  "uncached_s_all": [round(x, 4) for x in times[(n, False)]]}
    header = ["new tokens", "cached tok/s", "uncached tok/s", "speedup", "identical tokens", "spread (max-min)/median c/u"]
    table = fmt_table(rows, header)
    summary = []
    if bs in lengths and max(lengths) > bs:
        n2 = max(lengths)
        dc, du = med[(n2, True)] - med[(bs, True)], med[(n2, False)] - med[(bs, False)]
        dc, du = max(dc, 1e-9), max(du, 1e-9)  # noise can make a difference of medians <= 0
        res["beyond_context"] = {"tokens": n2 - bs, "cached_tokens_per_s": round((n2 - bs) / dc, 1),
                                 "uncached_tokens_per_s": round((n2 - bs) / du, 1), "speedup": round(du / dc, 2)}
        summary.append(f"beyond the context (tokens {bs + 1}-{n2}): cached {(n2 - bs) / dc:,.0f} tok/s, uncached "
                       f"{(n2 - bs) / du:,.0f} tok/s ({du / dc:.2f}x): past block_size the cache is dropped and each "
                       f"step recomputes the last {bs} tokens (learned absolute positions cannot slide), so both "
                       f"paths do the same work there")
    if bs in lengths:
        s = med[(bs, False)] / med[(bs, True)]
        summary.append(f"full context ({bs} new tokens): cache {s:.1f}x faster (target >= 5x: {'MET' if s >= 5 else 'MISSED'}), "
                       f"tokens identical: {identical[bs]}")
    summary.append(f"all lengths: cached and uncached tokens identical: {all(identical.values())}")
    summary.append(f"load average (1 min) during the runs: {min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")
    if a.profile or (bs in lengths and med[(bs, False)] / med[(bs, True)] < 5):
        res["profile"] = profile(model, prompt, bs, log)
    log("")
    log(table)
    for s in summary:
        log(s)
    res["summary"] = summary
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    md = [f"# generate, reference model ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{a.threads} threads, {os.cpu_count()} CPUs)", "", table, ""] + [f"- {s}" for s in summary]
    if "profile" in res:
        pr = res["profile"]
        md += ["", f"Profile of one cached {bs}-token generation: {pr['per_token_ms']} ms/token, model forward "
                   f"{pr['forward_per_token_ms']} ms/token ({100 * pr['forward_share']:.0f}%).", "", "```",
               pr["top_ops"], "```"]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
