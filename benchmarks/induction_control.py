"""The induction control model of chapter 08: train it, time it, and check that the circuit is there.

    python benchmarks/induction_control.py [--threads 1] [--steps 1000] [--seed 0]

Trains :func:`minigpt.interpret.train_induction_model` (2-layer attention-only GPT) and reports on
held-out [r, r] sequences: wall time, second-copy loss before/after, every head's induction and
previous-token score, and the second-copy loss when heads are ablated (zero and mean ablation).
Writes results/induction_control.{json,md}. Timings depend on the machine's load: the 1-minute
load average (``os.getloadavg``) is recorded before and after, and the CPU time the process
actually got (on a busy machine under ``nice`` the wall time mostly measures waiting).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from minigpt.config import GPTConfig
from minigpt.interpret import (ablate, attention_patterns, half_losses, induction_chance, induction_scores,
                               make_attention_only, previous_token_scores, reference_means,
                               repeated_random_tokens, train_induction_model)
from minigpt.train import build_model

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the training loop; 1 by default: this model is too small to gain "
                         "from a second thread, and with another process on the cores 2 threads ran 14-20x "
                         "slower per step here (0.86-1.26 s vs 0.064 s)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--no-write", action="store_true", help="print only, keep results/ as it is")
    args = ap.parse_args()
    vocab, block, half = 64, 48, 24
    load_before = os.getloadavg()[0]
    run = train_induction_model(vocab_size=vocab, block_size=block, steps=args.steps, seed=args.seed,
                                n_head=args.n_head, n_embd=args.n_embd,
                                threads=args.threads)
    load_after = os.getloadavg()[0]
    model = run.model
    untrained = make_attention_only(build_model(model.config, seed=args.seed)).eval()
    g = torch.Generator().manual_seed(10_000 + args.seed)
    test = repeated_random_tokens(64, half, vocab, g)  # held out: a generator the training never used
    ref = repeated_random_tokens(64, half, vocab, g)  # reference batch for mean ablation
    w = attention_patterns(model, test)  # (B, L, H, T, T)
    ind = induction_scores(w).mean(0)  # (L, H)
    prev = previous_token_scores(w).mean(0)
    first0, second0 = half_losses(untrained, test)
    first1, second1 = half_losses(model, test)
    best = divmod(int(ind[1:].argmax()) + ind.shape[1], ind.shape[1])  # induction head: layer >= 1
    prev_head = divmod(int(prev[: best[0]].argmax()), prev.shape[1])  # previous-token head below it
    means = reference_means(model, ref)
    ablations = {}
    for l in range(model.config.n_layer):
        for h in range(model.config.n_head):
            row = {}
            for mode in ("zero", "mean"):
                with ablate(model, heads=[(l, h)], mode=mode, means=means):
                    row[mode] = half_losses(model, test)[1]
            ablations[f"L{l}H{h}"] = row
    chance = induction_chance(2 * half)
    groups = {  # heads that share the job: ablated together
        "induction heads (score > 10x chance)": [(l, h) for l in range(1, ind.shape[0]) for h in range(ind.shape[1])
                                                  if ind[l, h] > 10 * chance],
        "previous-token heads (score > 0.2)": [(l, h) for l in range(best[0]) for h in range(prev.shape[1])
                                               if prev[l, h] > 0.2],
    }
    group_ablations = {}
    for name, hs in groups.items():
        row = {"heads": [f"L{l}H{h}" for l, h in hs]}
        for mode in ("zero", "mean"):
            with ablate(model, heads=hs, mode=mode, means=means):
                row[mode] = round(half_losses(model, test)[1], 4)
        group_ablations[name] = row
    out = {
        "config": model.config.to_dict(), "steps": run.steps, "threads": run.threads,
        "train_seconds": round(run.seconds, 2), "train_cpu_seconds": round(run.cpu_seconds, 2), "load1_before": load_before, "load1_after": load_after,
        "second_half_loss_before": round(second0, 4), "second_half_loss_after": round(second1, 4),
        "first_half_loss_after": round(first1, 4), "log_vocab": round(float(torch.log(torch.tensor(vocab))), 4),
        "induction_scores": [[round(float(x), 4) for x in r] for r in ind],
        "previous_token_scores": [[round(float(x), 4) for x in r] for r in prev],
        "induction_chance": round(induction_chance(2 * half), 4),
        "induction_head": list(best), "previous_token_head": list(prev_head),
        "ablated_second_half_loss": {k: {m: round(v, 4) for m, v in r.items()} for k, r in ablations.items()},
        "group_ablations": group_ablations,
    }
    print(json.dumps(out, indent=1))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "induction_control.json").write_text(json.dumps(out, indent=1) + "\n")
        lines = ["| head | induction | prev-token | 2nd-copy loss, zero-abl. | mean-abl. |", "|---|---|---|---|---|"]
        for l in range(model.config.n_layer):
            for h in range(model.config.n_head):
                a = ablations[f"L{l}H{h}"]
                lines.append(f"| L{l}H{h} | {ind[l, h]:.3f} | {prev[l, h]:.3f} | {a['zero']:.3f} | {a['mean']:.3f} |")
        head = (f"{run.steps} steps in {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU "
                f"({run.threads} threads, 1-min load {load_before:.1f} before, {load_after:.1f} after); "
                f"second-copy loss {second0:.3f} -> {second1:.3f} nats (log V = {out['log_vocab']}); "
                f"chance induction score {out['induction_chance']:.3f}\n\n")
        lines += ["", "| ablated together | heads | 2nd-copy loss, zero-abl. | mean-abl. |", "|---|---|---|---|"]
        lines += [f"| {k} | {', '.join(r['heads'])} | {r['zero']:.3f} | {r['mean']:.3f} |" for k, r in group_ablations.items()]
        (RESULTS / "induction_control.md").write_text(head + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
