"""Evaluate the bundled reference model and write the numbers its model card reports.

    python benchmarks/reference_model.py          # full val split, loss curve, samples (CPU, ~2 min)

Writes benchmarks/results/reference_model.json, the card's figure
assets/pretrained/shakespeare-bpe/loss_curve.png, and records the fixed-slice validation loss in the
checkpoint's meta.json (``eval`` entry) so that tests can check the model against its card.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from minigpt import generate_text, pretrained, shakespeare  # noqa: E402
from minigpt.checkpoint import atomic_write_text  # noqa: E402
from minigpt.data import encode_corpus  # noqa: E402
from minigpt.objective import bits_per_char  # noqa: E402
from minigpt.train import evaluate  # noqa: E402

SLICE_TOKENS = 8192  # the fixed slice of the val split that tests re-evaluate
SAMPLES = [dict(prompt="ROMEO:\n", seed=s, temperature=0.8, top_k=50, max_new_tokens=80) for s in (1, 2)] + [
    dict(prompt="KING RICHARD III:\n", seed=3, temperature=0.8, top_k=50, max_new_tokens=80)]


def main() -> None:
    torch.set_num_threads(2)
    ck = pretrained()
    root = Path(ck.path)
    val_text = shakespeare("val")
    val = encode_corpus(val_text, ck.tokenizer)
    bs = ck.config.block_size
    t0 = time.perf_counter()
    full = evaluate(ck.model, val, bs, 32)
    n_windows = len(val) // bs  # evaluate drops the last partial window; count the chars it covers
    covered_chars = len(ck.tokenizer.decode(val[: n_windows * bs].tolist()))
    bpc = bits_per_char(full, n_windows * bs, covered_chars)
    sliced = evaluate(ck.model, val[:SLICE_TOKENS], bs, 32)
    eval_s = time.perf_counter() - t0
    samples = [{**s, "text": generate_text(ck.model, ck.tokenizer, s["prompt"], **{k: v for k, v in s.items() if k != "prompt"})[0]}
               for s in SAMPLES]
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot([r["iter"] for r in rows], [r["train_loss"] for r in rows], "o-", label="train (20 batches)")
    ax.plot([r["iter"] for r in rows], [r["val_loss"] for r in rows], "s-", label="val (20 batches)")
    ax.axhline(full, color="grey", ls="--", label=f"final val, full split: {full:.3f}")
    ax.axhline(math.log(ck.config.vocab_size), color="red", ls=":", label="uniform guess ln V")
    ax.set(title="Reference model: loss during pretraining", xlabel="iteration", ylabel="loss (nats per BPE token)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(root / "loss_curve.png", dpi=80)
    result = {
        "val_loss_full": round(full, 4), "val_bits_per_char_full": round(bpc, 4),
        "val_nats_per_char_full": round(bpc * math.log(2), 4), "val_tokens": n_windows * bs,
        "val_chars": covered_chars, "chars_per_token": round(covered_chars / (n_windows * bs), 3),
        f"val_loss_first_{SLICE_TOKENS}_tokens": round(sliced, 4), "eval_seconds_cpu": round(eval_s, 1),
        "params": ck.model.num_params(), "samples": samples,
    }
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    Path("benchmarks/results/reference_model.json").write_text(json.dumps(result, indent=2) + "\n")
    meta = json.loads((root / "meta.json").read_text())
    meta["eval"] = {k: result[k] for k in ("val_loss_full", "val_bits_per_char_full", f"val_loss_first_{SLICE_TOKENS}_tokens")}
    atomic_write_text(root / "meta.json", json.dumps(meta, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    for s in samples:
        print(f"--- seed {s['seed']}, temperature {s['temperature']}, top_k {s['top_k']}\n{s['prompt']}{s['text']}")


if __name__ == "__main__":
    main()
