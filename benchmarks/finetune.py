"""Fine-tuning benchmark: the genre of a speech (comedy / history / tragedy), test plays unseen.

Starts from the pretrained reference model and measures, on the balanced test split (VAL_PLAYS,
seen by neither pretraining nor fine-tuning):

* baselines: majority class, bag-of-words logistic regression (L2 chosen on the validation plays);
* classification head: linear probe, last 2 blocks, full fine-tuning, LoRA (all blocks);
* supervised fine-tuning of the LM (genre asked as text, loss on the answer only), with the
  held-out general LM loss before and after (forgetting).

Writes benchmarks/results/finetune.json and prints a table. About 25 minutes on 2 CPU cores:

    python benchmarks/finetune.py            # the README's numbers
    python benchmarks/finetune.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from minigpt import pretrained, seed_everything
from minigpt.data import VAL_PLAYS, encode_corpus, shakespeare
from minigpt.finetune import (CLASSES, FT_VAL_PLAYS, BagOfWords, GPTClassifier, LogisticRegression, accuracy,
                              add_lora, confusion_matrix, count_parameters, encode_texts, freeze, genre_examples,
                              genre_pairs, majority_baseline, predict, predict_genre, response_loss, train_classifier,
                              train_sft)
from minigpt.train import evaluate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-per-class", type=int, default=800)
    ap.add_argument("--val-per-class", type=int, default=150)
    ap.add_argument("--test-per-class", type=int, default=170)
    ap.add_argument("--min-chars", type=int, default=200)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--sft-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check that it runs")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/finetune.json"))
    args = ap.parse_args()
    if args.quick:
        args.train_per_class, args.val_per_class, args.test_per_class = 40, 20, 20
        args.steps = args.sft_steps = 10
        args.out = str(Path(args.out).with_name("finetune_quick.json"))
    torch.set_num_threads(args.threads)

    ck = pretrained()
    tok = ck.tokenizer
    data = {s: genre_examples(s, min_chars=args.min_chars, per_class=n, seed=0)
            for s, n in (("train", args.train_per_class), ("val", args.val_per_class), ("test", args.test_per_class))}
    enc = {s: (*encode_texts([e.text for e in ex], tok, args.max_tokens), torch.tensor([e.label for e in ex]))
           for s, ex in data.items()}
    # the baselines read exactly the text the models read: the first max_tokens tokens
    cut = {s: [tok.decode(tok.encode(e.text)[:args.max_tokens]) for e in ex] for s, ex in data.items()}
    y = {s: enc[s][2] for s in data}
    results: dict = {"task": {
        "classes": CLASSES, "test_plays": VAL_PLAYS, "val_plays": FT_VAL_PLAYS,
        "per_class": {s: len(ex) // len(CLASSES) for s, ex in data.items()},
        "all_speeches": {s: torch.bincount(torch.tensor([e.label for e in genre_examples(s, args.min_chars)]),
                                           minlength=len(CLASSES)).tolist() for s in data},
        "min_chars": args.min_chars, "max_tokens": args.max_tokens},
        "args": vars(args), "torch": torch.__version__, "machine": platform.machine(), "methods": {}}

    def report(name: str, pred: torch.Tensor, trainable: int, seconds: float, **extra) -> None:
        acc = accuracy(pred, y["test"])
        results["methods"][name] = {"test_acc": round(acc, 4), "trainable_params": trainable,
                                    "confusion": confusion_matrix(y["test"], pred, len(CLASSES)).tolist(),
                                    "seconds": round(seconds, 1), **extra}
        print(f"{name:28s} test acc {acc:.3f}  trainable {trainable:>9,d}  {seconds:6.1f} s", flush=True)

    t = time.time()
    report("majority class", majority_baseline(y["train"], len(y["test"])), 0, time.time() - t)

    t = time.time()
    bow = BagOfWords(cut["train"])
    X = {s: bow(cut[s]) for s in data}
    best = max((accuracy(LogisticRegression(l2).fit(X["train"], y["train"], len(CLASSES)).predict(X["val"]), y["val"]), l2)
               for l2 in (1e-4, 1e-3, 1e-2, 1e-1))
    lr_model = LogisticRegression(best[1]).fit(X["train"], y["train"], len(CLASSES))
    report("bag-of-words logistic reg.", lr_model.predict(X["test"]), lr_model.W.numel() + lr_model.b.numel(),
           time.time() - t, val_acc=round(best[0], 4), l2=best[1], vocab=len(bow.vocab))

    def fine_tune(name: str, setup, lr: float) -> None:
        seed_everything(0)
        model = GPTClassifier(pretrained().model, len(CLASSES), pooling="last")
        setup(model)
        trainable = count_parameters(model)[0]
        t = time.time()
        hist = train_classifier(model, enc["train"], enc["val"], steps=args.steps, batch_size=args.batch_size,
                                lr=lr, eval_every=max(1, args.steps // 6), seed=0)
        n = model.frozen_prefix()
        pred = predict(model, enc["test"][0], enc["test"][1])
        report(name, pred, trainable, time.time() - t, lr=lr, val_acc=hist["val_acc"], eval_step=hist["eval_step"],
               frozen_blocks_cached=n)

    fine_tune("head only (linear probe)", lambda m: freeze(m, train_last=0), lr=3e-3)
    fine_tune("last 2 blocks + head", lambda m: freeze(m, train_last=2), lr=3e-4)
    fine_tune("full fine-tuning", lambda m: freeze(m, train_last=None), lr=1e-4)

    def lora(m):
        add_lora(m.gpt, r=8, alpha=16)
        m.head.requires_grad_(True)

    fine_tune("LoRA r=8 (all blocks) + head", lora, lr=1e-3)

    # ---- SFT: the genre asked as text; answers scored by log-probability
    seed_everything(0)
    gpt = pretrained().model
    pairs = {s: genre_pairs(data[s], tok, args.max_tokens - 8) for s in ("train", "test")}
    val_ids = encode_corpus(shakespeare("val"), tok)
    general = lambda: evaluate(gpt, val_ids, 64, 32, max_batches=20)  # noqa: E731
    before = {"test_acc_zero_shot": accuracy(predict_genre(gpt, tok, data["test"], args.max_tokens - 8), y["test"]),
              "answer_loss": response_loss(gpt, pairs["test"]), "general_val_loss": general()}
    freeze(gpt, train_last=None)
    t = time.time()
    hist = train_sft(gpt, pairs["train"], steps=args.sft_steps, batch_size=args.batch_size, lr=1e-4, seed=0)
    pred = predict_genre(gpt, tok, data["test"], args.max_tokens - 8)
    seconds = time.time() - t
    after = {"answer_loss": response_loss(gpt, pairs["test"]), "general_val_loss": general()}
    report("SFT (LM answers the genre)", pred, count_parameters(gpt)[0], seconds,
           before={k: round(v, 4) for k, v in before.items()}, after={k: round(v, 4) for k, v in after.items()},
           final_train_loss=round(sum(hist["loss"][-20:]) / len(hist["loss"][-20:]), 4))
    print(f"  SFT: zero-shot acc {before['test_acc_zero_shot']:.3f}; answer loss {before['answer_loss']:.3f} -> "
          f"{after['answer_loss']:.3f}; general val loss {before['general_val_loss']:.3f} -> {after['general_val_loss']:.3f}")

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"\n| method | test accuracy | trainable parameters |\n|---|---|---|")
    for name, r in results["methods"].items():
        print(f"| {name} | {r['test_acc']:.3f} | {r['trainable_params']:,} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
