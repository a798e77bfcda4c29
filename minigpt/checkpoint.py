"""Checkpoints: save and load a model as a folder of safetensors + JSON, the bundled pretrained
model, and importing Hugging Face GPT-2 weights.

A checkpoint is a folder::

    model.safetensors   the weights (the tied lm_head is stored once, as transformer.wte.weight)
    config.json         the GPTConfig
    tokenizer.json      the tokenizer (optional)
    meta.json           free-form facts: step, val_loss, training arguments, versions
    README.md           a short model card

There is no pickle anywhere, so loading a checkpoint from a stranger cannot run code. Every file
is written atomically: to a temporary file in the same folder, flushed to disk, then renamed over
the old one, so a crash mid-save never leaves a half-written file behind. Files get the
permissions of any new file (``0o666`` less the umask), not the temporary file's ``0o600``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from .config import GPTConfig
from .model import GPT

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
META_FILE = "meta.json"
CARD_FILE = "README.md"
TIED_HEAD = "lm_head.weight"  # the same tensor as transformer.wte.weight, stored once

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_HINT = ("create it with `make pretrained` (which runs `python -m minigpt train --config "
              "assets/pretrained/shakespeare-bpe.json --out assets/pretrained/shakespeare-bpe`)")


class CheckpointError(ValueError):
    """A checkpoint folder exists but its contents are damaged or do not fit together."""


# --------------------------------------------------------------------------- atomic writes

def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write.
    The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0o600; an ordinary new file respects the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` for text, encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666`` less the process umask."""
    mask = os.umask(0o077)  # reading the umask means setting it: briefly a strict one, never a lax one
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_safetensors_atomic(tensors: Mapping[str, torch.Tensor], path: str | Path,
                            metadata: dict[str, str] | None = None) -> Path:
    """Save named tensors as a safetensors file, atomically (tensors moved to CPU, contiguous).

    ``metadata`` is a str -> str dict stored in the file header. Tensors sharing memory are
    refused by safetensors: save each shared tensor once.
    """
    from safetensors.torch import save

    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return atomic_write_bytes(path, save(flat, metadata=metadata))


def read_safetensors(path: str | Path, device: str | torch.device = "cpu"
                     ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file as ``(tensors, metadata)``, with a clear error for a damaged file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    head = path.read_bytes()[:64] if path.stat().st_size < 1024 else b""
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointError(f"{path} is a Git LFS pointer, not the weights: run `git lfs pull`")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers / sizes
        raise CheckpointError(f"{path} is corrupt or truncated ({type(e).__name__}: {e}); "
                              "re-save the checkpoint or copy the file again") from e
    return tensors, metadata


# --------------------------------------------------------------------------- save

def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside ``torch.compile`` (``_orig_mod``) and DDP/DataParallel (``.module``)."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


def _json_default(obj: Any) -> Any:
    """JSON for the values training code tends to put in meta: paths, devices, scalars, tuples."""
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return obj.item()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"meta value {obj!r} of type {type(obj).__name__} is not JSON serializable; "
                    "store numbers, strings, lists and dicts")


def default_card(config: GPTConfig, meta: Mapping[str, Any] | None = None, n_params: int | None = None) -> str:
    """A short model card in Markdown, written when ``save_checkpoint`` gets no ``card``.

    The losses are ``meta``'s; when ``meta["eval_step"]`` differs from ``meta["step"]`` the card
    says at which step they were measured."""
    meta = dict(meta or {})
    lines = ["# minigpt checkpoint", "",
             "A GPT-2 style decoder-only transformer trained with minigpt "
             "(weights in safetensors, no pickle).", "",
             "| setting | value |", "|---|---|"]
    for k, v in config.to_dict().items():
        lines.append(f"| {k} | {v} |")
    if n_params is not None:
        lines.append(f"| parameters | {n_params:,} |")
    evaluated = f" (evaluated at step {meta['eval_step']})" if meta.get("eval_step") not in (None, meta.get("step")) else ""
    for k in ("step", "val_loss", "train_loss", "data", "tokenizer"):
        if k in meta:
            v = meta[k]
            note = evaluated if k.endswith("_loss") else ""
            lines.append(f"| {k} | {round(v, 4) if isinstance(v, float) else v}{note} |")
    lines += ["", "Load it with `minigpt.checkpoint.load_checkpoint(path)`.", ""]
    return "\n".join(lines)


def save_checkpoint(path: str | Path, model: nn.Module, tokenizer: Any | None = None, *,
                    meta: dict[str, Any] | None = None, card: str | None = None) -> Path:
    """Save ``model`` (and optionally its tokenizer) as a checkpoint folder; returns the folder.

    Args:
        path: the folder, created if needed; files already there are replaced atomically.
        model: a :class:`~minigpt.model.GPT`, possibly ``torch.compile``d or DDP-wrapped.
        tokenizer: anything with ``to_dict()`` and ``vocab_size`` (a ``minigpt.tokenizer``
            tokenizer); its vocab_size must equal the model's. Without it, a stale
            ``tokenizer.json`` from an earlier save is removed.
        meta: JSON-serializable facts (step, val_loss, training arguments…); the minigpt and
            torch versions are added.
        card: the model card (Markdown) for README.md; a short generated one when None.
    """
    from . import __version__

    m = unwrap_model(model)
    if not isinstance(m, GPT):
        raise TypeError(f"save_checkpoint needs a minigpt GPT, got {type(m).__name__}")
    config = m.config
    if tokenizer is not None:
        tv = getattr(tokenizer, "vocab_size", None)
        if tv != config.vocab_size:
            raise ValueError(f"tokenizer vocab_size {tv} != model vocab_size {config.vocab_size}: "
                             "save the model with the tokenizer it was trained with")
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; a checkpoint is a folder: choose another path")
    folder.mkdir(parents=True, exist_ok=True)

    state = m.state_dict()
    tied = m.lm_head.weight is m.transformer.wte.weight
    tensors = {k: v for k, v in state.items() if not (tied and k == TIED_HEAD)}
    save_safetensors_atomic(tensors, folder / WEIGHTS_FILE,
                            metadata={"format": "pt", "minigpt_version": __version__, "tied_lm_head": str(tied)})
    atomic_write_text(folder / CONFIG_FILE, config.to_json() + "\n")
    if tokenizer is not None:
        atomic_write_text(folder / TOKENIZER_FILE, json.dumps(tokenizer.to_dict(), ensure_ascii=False) + "\n")
    else:
        (folder / TOKENIZER_FILE).unlink(missing_ok=True)
    meta = {**(meta or {})}
    meta.setdefault("minigpt_version", __version__)
    meta.setdefault("torch_version", torch.__version__.split("+")[0])
    try:
        meta_text = json.dumps(meta, indent=2, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"meta cannot be written as JSON: {e}") from e
    atomic_write_text(folder / META_FILE, meta_text + "\n")
    if card is None:
        card = default_card(config, meta, m.num_params())
    atomic_write_text(folder / CARD_FILE, card if card.endswith("\n") else card + "\n")
    return folder


# --------------------------------------------------------------------------- load

@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (in eval mode), its config, tokenizer, meta and folder."""

    model: GPT = field(repr=False)
    config: GPTConfig
    tokenizer: Any | None
    meta: dict[str, Any]
    path: Path
    card: str | None = field(default=None, repr=False)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e}); the file is damaged: "
                              "re-save the checkpoint or restore this file") from e


def _few(names: list[str], n: int = 5) -> str:
    more = f" … and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def _check_tensors(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                   source: str, fix: str) -> None:
    """Raise a CheckpointError naming missing / unexpected tensors and shape mismatches."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} tensor(s): {_few(unexpected)}")
    if problems:
        raise CheckpointError(f"{source}: {'; '.join(problems)}. {fix}")
    bad = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
           for k in expected if tuple(found[k].shape) != tuple(expected[k].shape)]
    if bad:
        raise CheckpointError(f"{source}: shape mismatch for {len(bad)} tensor(s): {_few(bad, 3)}. {fix}")


def _check_finite(tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    """Raise a CheckpointError naming the tensors that hold NaN or infinite values."""
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()))
    if bad:
        raise CheckpointError(f"{source} holds NaN or infinite weights in {len(bad)} tensor(s): {_few(bad)}; "
                              "the model is unusable (training diverged?): use an earlier checkpoint")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint folder written by :func:`save_checkpoint`; the model is in eval mode.

    Every file is checked, and a problem raises an error that names the file and the fix:
    FileNotFoundError for a missing folder or file, :class:`CheckpointError` (a ValueError) for
    invalid JSON, a corrupt weights file, missing/unexpected tensors, shape mismatches, NaN or
    infinite weights, or a tokenizer whose vocab_size differs from the model's.
    """
    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"checkpoint folder {folder} does not exist; save one with "
                                "minigpt.checkpoint.save_checkpoint(path, model, tokenizer) or "
                                f"`python -m minigpt train --out {folder}`")
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; a checkpoint is a folder: pass {folder.parent}")
    missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} is not a complete minigpt checkpoint: {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} missing (a checkpoint needs {WEIGHTS_FILE} and {CONFIG_FILE})")

    cfg_file = folder / CONFIG_FILE
    cfg_dict = _read_json(cfg_file)
    if not isinstance(cfg_dict, dict):
        raise CheckpointError(f"{cfg_file} must hold a JSON object, got {type(cfg_dict).__name__}")
    try:
        config = GPTConfig.from_dict(cfg_dict)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_file} is not a valid GPTConfig: {e}") from e

    weights_file = folder / WEIGHTS_FILE
    tensors, _ = read_safetensors(weights_file)
    model = GPT(config)
    expected = {k: v for k, v in model.state_dict().items() if k != TIED_HEAD}
    untied_head = tensors.pop(TIED_HEAD, None)
    looks_hf = any(k.startswith("h.") or k.endswith((".attn.bias", ".attn.masked_bias")) for k in tensors)
    fix = (f"{weights_file.name} and {cfg_file.name} do not belong together"
           + (" (this looks like a Hugging Face GPT-2 state dict: use from_hf_gpt2)" if looks_hf else "")
           + "; re-save both with save_checkpoint")
    _check_tensors(tensors, expected, str(weights_file), fix)
    if untied_head is None and not config.tie_weights:
        raise CheckpointError(f"{weights_file} has no {TIED_HEAD} but {cfg_file.name} says tie_weights=false: "
                              f"the output head is missing. {fix}")
    if untied_head is not None:  # saved from a model whose head was untied
        _check_tensors({TIED_HEAD: untied_head}, {TIED_HEAD: model.lm_head.weight}, str(weights_file), fix)
        model.lm_head.weight = nn.Parameter(untied_head.clone())
    _check_finite({**tensors, **({TIED_HEAD: untied_head} if untied_head is not None else {})}, weights_file)
    model.load_state_dict(tensors, strict=False)  # names and shapes checked above; lm_head is tied

    tokenizer = None
    tok_file = folder / TOKENIZER_FILE
    if tok_file.is_file():
        tok_dict = _read_json(tok_file)
        from .tokenizer import load_tokenizer  # lazy: checkpoints without tokenizers need no tokenizer code

        try:
            tokenizer = load_tokenizer(tok_dict)
        except (TypeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{tok_file} is not a valid minigpt tokenizer ({e}); "
                                  "re-save the checkpoint with its tokenizer") from e
        if tokenizer.vocab_size != config.vocab_size:
            raise CheckpointError(f"{tok_file} has vocab_size {tokenizer.vocab_size} but {cfg_file.name} "
                                  f"has vocab_size {config.vocab_size}: the tokenizer belongs to a different "
                                  "model; save the model together with the tokenizer it was trained with")

    meta: dict[str, Any] = {}
    if (folder / META_FILE).is_file():
        meta = _read_json(folder / META_FILE)
        if not isinstance(meta, dict):
            raise CheckpointError(f"{folder / META_FILE} must hold a JSON object, got {type(meta).__name__}")
    card = (folder / CARD_FILE).read_text(encoding="utf-8") if (folder / CARD_FILE).is_file() else None
    model.to(device).eval()
    return Checkpoint(model=model, config=config, tokenizer=tokenizer, meta=meta, path=folder, card=card)


def assets_dir() -> Path:
    """The assets folder: ``$MINIGPT_ASSETS`` if set, else ``<repo>/assets``."""
    env = os.environ.get("MINIGPT_ASSETS")
    return Path(env) if env else REPO_ROOT / "assets"


def pretrained(name: str = "shakespeare-bpe", device: str | torch.device = "cpu") -> Checkpoint:
    """Load a bundled reference model from ``<assets>/pretrained/<name>/``.

    The assets folder is ``<repo>/assets``, or ``$MINIGPT_ASSETS`` when set. A missing model
    raises FileNotFoundError saying where it looked, which models exist, and how to create it.
    """
    if not name or any(sep in name for sep in ("/", "\\")) or name in (".", ".."):
        raise ValueError(f"pretrained model name must be a plain folder name, got {name!r}")
    root = assets_dir() / "pretrained"
    folder = root / name
    if not (folder / WEIGHTS_FILE).is_file():
        names = sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file()) if root.is_dir() else []
        raise FileNotFoundError(
            f"no pretrained model {name!r}: looked for {folder / WEIGHTS_FILE}. "
            f"Available in {root}: {', '.join(names) if names else 'none'}. "
            f"The reference model is trained by the project's own command: {TRAIN_HINT}; "
            "or set MINIGPT_ASSETS to a folder that holds pretrained/<name>/.")
    return load_checkpoint(folder, device=device)


# --------------------------------------------------------------------------- Hugging Face GPT-2

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers in older transformers


def _hf_get(hf_config: Any, key: str, default: Any = None) -> Any:
    if isinstance(hf_config, Mapping):
        return hf_config.get(key, default)
    return getattr(hf_config, key, default)


def config_from_hf(hf_config: Any) -> GPTConfig:
    """A :class:`GPTConfig` for a Hugging Face ``GPT2Config`` (or its ``to_dict()``), dropout 0.

    Fails clearly for GPT-2 variants this model cannot reproduce (another activation, a
    different LayerNorm epsilon or FFN width, cross-attention, per-layer attention scaling).
    """
    act = _hf_get(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function={act!r} is not supported: minigpt's GELU is the tanh "
                         "approximation (Hugging Face 'gelu_new' / 'gelu_pytorch_tanh')")
    n_embd = _hf_get(hf_config, "n_embd")
    checks = [("layer_norm_epsilon", 1e-5), ("n_inner", None), ("add_cross_attention", False),
              ("scale_attn_by_inverse_layer_idx", False), ("scale_attn_weights", True)]
    for key, want in checks:
        got = _hf_get(hf_config, key, want)
        ok = got == want or (key == "n_inner" and got == 4 * n_embd) or \
            (key == "layer_norm_epsilon" and abs(float(got) - want) < 1e-12)
        if not ok:
            raise ValueError(f"{key}={got!r} is not supported (minigpt reproduces GPT-2 with {key}={want!r})")
    if _hf_get(hf_config, "tie_word_embeddings", True) is False:
        raise ValueError("tie_word_embeddings=False is not supported: minigpt ties lm_head to wte")
    return GPTConfig(vocab_size=_hf_get(hf_config, "vocab_size"), block_size=_hf_get(hf_config, "n_positions"),
                     n_layer=_hf_get(hf_config, "n_layer"), n_head=_hf_get(hf_config, "n_head"),
                     n_embd=n_embd, dropout=0.0, bias=True, activation="gelu")


def from_hf_gpt2(state_dict_or_model: Any, config: GPTConfig | None = None) -> GPT:
    """Build a minigpt :class:`GPT` from Hugging Face GPT-2 weights; returned in eval mode.

    Accepts a ``transformers`` ``GPT2LMHeadModel`` / ``GPT2Model`` (its config is read with
    :func:`config_from_hf`) or a state dict (then ``config`` is required: the number of heads is
    not visible in the weights). Keys with or without the ``transformer.`` prefix are accepted,
    Conv1D weights (stored as (in, out)) are transposed into Linear's (out, in), the attention
    mask buffers are ignored, and any other missing or unexpected tensor is an error.
    """
    if isinstance(state_dict_or_model, nn.Module):
        hf = state_dict_or_model
        if config is None:
            if not hasattr(hf, "config"):
                raise TypeError("from_hf_gpt2 needs a transformers GPT-2 model (with .config) or a state dict + config")
            config = config_from_hf(hf.config)
        sd = hf.state_dict()
    elif isinstance(state_dict_or_model, Mapping):
        sd = state_dict_or_model
        if config is None:
            raise ValueError("from_hf_gpt2(state_dict) needs config=GPTConfig(...) (or use "
                             "config_from_hf(hf_config)): n_head cannot be read from the weights")
    else:
        raise TypeError(f"from_hf_gpt2 needs a GPT-2 model or a state dict, got {type(state_dict_or_model).__name__}")

    tensors: dict[str, torch.Tensor] = {}
    head = None
    for key, t in sd.items():
        if key.endswith(_HF_BUFFERS):
            continue
        if key == TIED_HEAD:
            head = t
            continue
        name = key if key.startswith("transformer.") else "transformer." + key
        t = t.detach()
        if name.endswith(_CONV1D):
            t = t.t()  # Conv1D (in, out) -> Linear (out, in)
        tensors[name] = t
    wte = tensors.get("transformer.wte.weight")
    if head is not None and wte is not None and head.shape == wte.shape and not torch.equal(head, wte):
        raise ValueError("lm_head.weight differs from transformer.wte.weight: minigpt ties the output "
                         "head to the token embedding, so an untied GPT-2 cannot be imported")
    config = GPTConfig.from_dict({**config.to_dict(), "dropout": 0.0}) if config.dropout else config
    model = GPT(config)
    expected = {k: v for k, v in model.state_dict().items() if k != TIED_HEAD}
    _check_tensors(tensors, expected, "Hugging Face GPT-2 state dict",
                   "Is it a GPT-2 (GPT2LMHeadModel) state dict, and does config match it "
                   "(vocab_size, n_positions, n_layer, n_embd)?")
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name != TIED_HEAD:
                p.copy_(tensors[name])
    return model.eval()
