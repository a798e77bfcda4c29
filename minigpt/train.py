"""Training: the loop, the learning-rate schedule, evaluation, the history, checkpoints and resume.

One optimizer step reads ``grad_accum`` batches, each ``batch_size`` windows of ``block_size``
tokens, averages their losses, back-propagates, clips the gradient norm and takes an AdamW step.
Everything random is keyed by the step number: batch ``k`` is always the same windows
(:class:`~minigpt.data.BatchSampler`) and dropout is re-seeded from ``(seed, step)``, so a run
resumed from a checkpoint ends with exactly the weights of an uninterrupted one.

The training state lives beside the checkpoint in ``out_dir``::

    optimizer.safetensors   AdamW's tensors: state.{param_index}.exp_avg / .exp_avg_sq / .step
    train_state.json        step, elapsed time, TrainConfig, AdamW's param_groups (hyperparameters)
    metrics.jsonl           one JSON object per evaluation

SIGINT (Ctrl-C) or SIGTERM during :func:`train` with an ``out_dir`` saves a complete checkpoint of
the last finished step before :class:`TrainingInterrupted` is raised; a NaN or infinite loss
stops training before the bad step is applied (:class:`TrainingDiverged`) and saves nothing, so
the last checkpoint is kept.

Several processes (``torchrun --nproc_per_node=N -m minigpt train ...``) train one model with
PyTorch's DistributedDataParallel (see :mod:`minigpt.distributed`): ``batch_size`` is then the
GLOBAL batch, each of the N ranks takes an equal slice of the very batch one process would
draw, the gradients are averaged over ranks once per optimizer step, and rank 0 alone logs,
evaluates and saves. With dropout 0 the weights equal single-process training's (up to
float rounding in the all-reduce). On CUDA, TF32 is switched on for float32 matmuls, batches are
copied from pinned memory, AdamW is fused and ``dtype="auto"`` is bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from . import distributed
from .config import GPTConfig
from .device import pick_device, seed_everything
from .distributed import DistInfo  # noqa: F401  (re-exported: it used to live here)
from .model import GPT
from .optim import OPTIMIZERS, MuonAdamW, build_optimizer, set_lr

Callback = Callable[[str, dict], Any]
OPTIMIZER_FILE, STATE_FILE, METRICS_FILE = "optimizer.safetensors", "train_state.json", "metrics.jsonl"
DTYPES = ("auto", "float32", "bfloat16", "float16")
LR_SCHEDULES = ("cosine", "wsd")
DIVERGED_ADVICE = "Lower the learning rate or warm it up over more steps"
RESUME_FILES = ("model.safetensors", "config.json", "meta.json", OPTIMIZER_FILE, STATE_FILE)  # a complete save


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped :func:`train`; ``step`` is the last finished step, saved in
    ``out_dir`` when there is one (``None``: nothing was saved)."""

    def __init__(self, step: int, out_dir: Path | None, signum: int) -> None:
        self.step, self.out_dir, self.signum = step, out_dir, signum
        self.where = f"saved step {step} to {out_dir}; continue with --resume" if out_dir else \
            f"stopped after step {step} (no out_dir: nothing saved)"
        super().__init__(f"{signal.Signals(signum).name}: {self.where}")


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite at step ``step`` (1-based): training stopped before
    that update and saved nothing; ``saved_step`` is the step of the checkpoint kept (or None)."""

    def __init__(self, message: str, step: int, saved_step: int | None) -> None:
        super().__init__(message)
        self.step, self.saved_step = step, saved_step


class _Stop(BaseException):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Signals:
    """While entered (in the main thread), SIGINT and SIGTERM raise :class:`_Stop`: at once, or,
    inside :meth:`deferred` (an optimizer update, a save), when that section ends. After
    ``closing`` is set they are only recorded."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth, self.closing, self.previous = 0, False, {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. nohup: keep ignoring it
                    self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.pending = signum
        if self.depth == 0 and not self.closing:
            raise _Stop(signum)

    @contextlib.contextmanager
    def deferred(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if self.depth == 0 and self.pending is not None and not self.closing:
            raise _Stop(self.pending)


@dataclass
class TrainConfig:
    """Hyperparameters of a training run (model shape lives in :class:`~minigpt.config.GPTConfig`).

    The learning rate warms up linearly for ``warmup_iters`` steps to ``learning_rate``, then
    decays to ``min_lr`` at ``lr_decay_iters`` (default: ``max_iters``): along a cosine
    (``lr_schedule="cosine"``), or ``"wsd"`` (warmup–stable–decay): constant, then a straight
    line down over the last ``cooldown_frac`` of the steps; set ``min_lr = learning_rate`` for a
    constant rate. ``optimizer="muon"`` trains the blocks' weight matrices with Muon at
    ``muon_lr`` (momentum ``muon_momentum``, no weight decay) and everything else with AdamW
    (see :mod:`minigpt.optim`); the schedule scales both learning rates alike. ``eval_batches=None`` evaluates on the whole
    validation split; ``train_eval_batches`` fixed random batches estimate the training loss.
    ``grad_clip=0`` disables clipping, ``ckpt_interval=0`` saves only at the end.
    ``batch_size`` is the global batch: under DDP each of the N processes takes batch_size / N rows.
    ``dtype="auto"`` is bfloat16 autocast on CUDA and float32 elsewhere; ``fused="auto"`` uses
    the fused AdamW kernel on CUDA and CPU (on CPU it is ~5x faster than the multi-tensor
    ``foreach`` one: 1.2 vs 6.7 ms per step for the 0.8M-parameter classic model, torch 2.13)
    and ``foreach`` elsewhere (MPS).
    """

    max_iters: int = 2000
    batch_size: int = 12
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int | None = None
    lr_schedule: str = "cosine"
    cooldown_frac: float = 0.4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    optimizer: str = "adamw"
    muon_lr: float = 0.02
    muon_momentum: float = 0.95
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_interval: int = 250
    eval_batches: int | None = None
    train_eval_batches: int = 20
    ckpt_interval: int = 0
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"
    compile: bool = False
    fused: bool | str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        def check(name: str, kind: type, lo: float, optional: bool = False) -> None:
            v = getattr(self, name)
            if v is None and optional:
                return
            ok = isinstance(v, kind) or (kind is float and isinstance(v, int))
            if isinstance(v, bool) or not ok:
                raise TypeError(f"TrainConfig.{name} must be {'an int' if kind is int else 'a number'}, got {v!r}")
            if v < lo:
                raise ValueError(f"TrainConfig.{name} must be >= {lo}, got {v}")

        for name in ("max_iters", "warmup_iters", "eval_interval", "ckpt_interval", "seed"):
            check(name, int, 0)
        for name in ("batch_size", "grad_accum", "train_eval_batches"):
            check(name, int, 1)
        check("lr_decay_iters", int, 0, optional=True)
        check("eval_batches", int, 1, optional=True)
        check("threads", int, 1, optional=True)
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "muon_lr"):
            check(name, float, 0)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("cooldown_frac", "muon_momentum"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1], got {v!r}")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"TrainConfig.min_lr ({self.min_lr}) must be <= learning_rate ({self.learning_rate})")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise ValueError(f"TrainConfig.{name} must be in [0, 1), got {v!r}")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"TrainConfig.device must be 'auto', 'cpu', 'cuda[:N]' or 'mps', got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.fused not in ("auto", True, False):
            raise ValueError(f"TrainConfig.fused must be 'auto', True or False, got {self.fused!r}")
        if not isinstance(self.compile, bool):
            raise TypeError(f"TrainConfig.compile must be True or False, got {self.compile!r}")

    @property
    def decay_iters(self) -> int:
        """The step at which the cosine reaches ``min_lr``."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build a config from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)


def dist_info() -> DistInfo:
    """Rank and world size of this process (rank 0 of 1 outside torchrun)."""
    return distributed.dist_info()


def build_model(config: GPTConfig, seed: int = 1337) -> GPT:
    """A freshly initialised :class:`GPT`, seeded first so that the initial weights are reproducible."""
    seed_everything(seed)
    return GPT(config)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then cosine (or WSD) to ``min_lr``."""
    if step < cfg.warmup_iters:
        return cfg.learning_rate * (step + 1) / (cfg.warmup_iters + 1)
    if step > cfg.decay_iters:
        return cfg.min_lr
    if cfg.lr_schedule == "wsd":  # stable at the peak, then a straight line to min_lr at decay_iters
        cooldown = cfg.cooldown_frac * cfg.decay_iters
        left = cfg.decay_iters - step  # steps until the end of the decay
        if left >= cooldown:
            return cfg.learning_rate
        return cfg.min_lr + (cfg.learning_rate - cfg.min_lr) * left / cooldown
    span = cfg.decay_iters - cfg.warmup_iters
    ratio = (step - cfg.warmup_iters) / span if span > 0 else 0.0  # 0 -> 1 over the decay
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.learning_rate - cfg.min_lr)


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device | None = None
                        ) -> torch.optim.AdamW | MuonAdamW:
    """AdamW with weight decay on matrices and embeddings (dim >= 2) only, not on biases or LayerNorm;
    with ``cfg.optimizer="muon"``, Muon for the blocks' weight matrices and AdamW for the rest.

    Trainable parameters only; a tied weight (``lm_head`` = ``wte``) appears once.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = device or (params[0].device if params else torch.device("cpu"))
    fused = device.type in ("cuda", "cpu") if cfg.fused == "auto" else cfg.fused
    return build_optimizer(model, name=cfg.optimizer, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                           betas=(cfg.beta1, cfg.beta2), fused=bool(fused), muon_lr=cfg.muon_lr,
                           muon_momentum=cfg.muon_momentum)


def _loss_over(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
               device: torch.device, max_batches: int | None) -> tuple[float, int]:
    """Mean loss per target token over ``batches`` (each weighted by its number of tokens), and
    the number of target tokens."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i, (x, y) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            x, y = x.to(device), y.to(device)
            _, loss = model(x, y)
            total += loss.item() * y.numel()
            count += y.numel()
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("nothing to evaluate: the data is shorter than one window of block_size + 1 tokens")
    return total / count, count


@torch.no_grad()
def evaluate(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int,
             max_batches: int | None = None, device: str | torch.device | None = None) -> float:
    """Mean loss (nats per token) over non-overlapping windows of ``data``, first to last.

    ``max_batches`` limits it to the first that many batches; ``device`` defaults to the model's.
    The model is switched to eval mode (no dropout) and restored afterwards.
    """
    return evaluate_counted(model, data, block_size, batch_size, max_batches, device)[0]


@torch.no_grad()
def evaluate_counted(model: nn.Module, data: torch.Tensor, block_size: int, batch_size: int,
                     max_batches: int | None = None, device: str | torch.device | None = None,
                     progress: bool = False) -> tuple[float, int]:
    """:func:`evaluate`, also returning how many target tokens it scored; ``progress=True`` shows
    a tqdm bar (off when the environment sets ``MINIGPT_PROGRESS=0``)."""
    from tqdm.auto import tqdm

    from .data import iter_eval_windows

    device = torch.device(device) if device is not None else next(model.parameters()).device
    n_batches = math.ceil(((len(data) - 1) // block_size) / batch_size)
    total = n_batches if max_batches is None else min(n_batches, max_batches)
    batches = tqdm(iter_eval_windows(data, block_size, batch_size), total=total, desc="eval", unit="batch",
                   disable=not progress or os.environ.get("MINIGPT_PROGRESS") == "0", dynamic_ncols=True)
    with contextlib.closing(batches):
        return _loss_over(model, batches, device, max_batches)


@dataclass
class History:
    """What happened during training: one dict per optimizer step and one per evaluation."""

    steps: list[dict] = field(default_factory=list)  # {"iter", "loss", "lr"}
    evals: list[dict] = field(default_factory=list)  # {"iter", "train_loss", "val_loss", "lr", "elapsed_s", "tokens_per_s"}

    @property
    def iters(self) -> list[int]:
        return [e["iter"] for e in self.evals]

    @property
    def train_loss(self) -> list[float]:
        return [e["train_loss"] for e in self.evals]

    @property
    def val_loss(self) -> list[float | None]:
        return [e["val_loss"] for e in self.evals]

    def to_jsonl(self, path: str | Path) -> Path:
        """Write the evaluations, one JSON object per line (the format of ``metrics.jsonl``)."""
        from .checkpoint import atomic_write_text

        return atomic_write_text(path, "".join(json.dumps(e) + "\n" for e in self.evals))

    @classmethod
    def from_jsonl(cls, path: str | Path) -> "History":
        lines = Path(path).read_text().splitlines()
        return cls(evals=[json.loads(line) for line in lines if line.strip()])


def _enable_tf32() -> None:
    """TensorFloat-32 for float32 matmuls and convolutions on CUDA (Ampere and newer): ~8x faster
    than full float32, 10 mantissa bits; bfloat16 autocast already covers most matmuls."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
    else:  # pragma: no cover - older torch
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _resolve(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    device = pick_device(None if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        _enable_tf32()
    if cfg.dtype == "auto":
        return device, torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, getattr(torch, cfg.dtype)


def _save_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any, tokenizer: Any,
                step: int, elapsed: float, cfg: TrainConfig, meta: dict) -> None:
    """Checkpoint + optimizer tensors + train_state.json (written last: it marks a complete save)."""
    from .checkpoint import atomic_write_text, save_checkpoint, save_safetensors_atomic

    save_checkpoint(out, model, tokenizer, meta={**meta, "step": step})
    sd = opt.state_dict()
    tensors = {f"state.{i}.{k}": v for i, s in sd["state"].items() for k, v in s.items()}
    save_safetensors_atomic(tensors, out / OPTIMIZER_FILE, metadata={"step": str(step)})
    state = {"step": step, "elapsed_s": elapsed, "train_config": cfg.to_dict(),
             "param_groups": sd["param_groups"], "scaler": scaler.state_dict() if scaler.is_enabled() else None}
    atomic_write_text(out / STATE_FILE, json.dumps(state, indent=2) + "\n")


def _load_state(out: Path, model: nn.Module, opt: torch.optim.Optimizer, scaler: Any) -> tuple[int, float]:
    """Restore weights, optimizer and scaler from ``out``; returns (step, elapsed seconds)."""
    from .checkpoint import load_checkpoint, read_safetensors, unwrap_model

    missing = [name for name in RESUME_FILES if not (out / name).is_file()]
    if missing:
        raise FileNotFoundError(f"cannot resume: {out} holds no complete training checkpoint "
                                f"({', '.join(missing)} missing)")
    state = json.loads((out / STATE_FILE).read_text())
    ckpt = load_checkpoint(out)
    tensors, header = read_safetensors(out / OPTIMIZER_FILE)
    steps = {STATE_FILE: state["step"], "meta.json": ckpt.meta.get("step"), OPTIMIZER_FILE: int(header.get("step", -1))}
    if len(set(steps.values())) != 1:
        raise ValueError(f"cannot resume from {out}: its files disagree on the step ({steps}); the last save was interrupted")
    m = unwrap_model(model)
    if ckpt.config != m.config:
        raise ValueError(f"cannot resume: the model in {out} has config {ckpt.config}, not {m.config}")
    m.load_state_dict(ckpt.model.state_dict())
    per_param: dict[int, dict] = {}
    for name, t in tensors.items():
        _, i, key = name.split(".", 2)
        per_param.setdefault(int(i), {})[key] = t
    opt.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    return state["step"], state["elapsed_s"]


def train(model: nn.Module, train_data: torch.Tensor, val_data: torch.Tensor | None, cfg: TrainConfig, *,
          tokenizer: Any = None, out_dir: str | Path | None = None, callbacks: Iterable[Callback] = (),
          resume: bool = False, meta: dict | None = None) -> History:
    """Train ``model`` (moved in place to ``cfg.device``) on 1-D token tensors; returns the :class:`History`.

    The caller builds (and seeds) the model, e.g. with :func:`build_model`. Evaluations happen
    at step 0, every ``eval_interval`` steps and at the end. With ``out_dir``, each evaluation is
    appended to ``metrics.jsonl`` and the checkpoint (with ``tokenizer`` and ``meta``) plus the
    optimizer state are saved every ``ckpt_interval`` steps and at the end; ``resume=True``
    continues from the state saved there, ending with the same weights as an uninterrupted run
    (bit for bit in eager mode; with ``compile=True`` only to about 1e-3). Each callback is
    called as ``cb(event, info)`` with ``event`` "step" (info: iter, loss, lr, model, tokenizer)
    or "eval" (the metrics record plus model and tokenizer); the model is put back in train mode
    after the callbacks, so they may sample from it. A resumed run's history holds the earlier
    evaluations (read back from ``metrics.jsonl``) but only the new steps.
    """
    from tqdm.auto import tqdm

    from .checkpoint import unwrap_model
    from .data import BatchSampler

    from .data import _to_device

    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, dtype = _resolve(cfg)
    dist = distributed.setup(device.type)  # joins torchrun's process group; a no-op for one process
    device = distributed.device_for_rank(device, dist)
    rows = distributed.shard_rows(cfg.batch_size, dist)  # this rank's slice of every global batch
    raw = unwrap_model(model).to(device)
    block = raw.config.block_size
    opt = configure_optimizer(raw, cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    sampler = BatchSampler(train_data, block, cfg.batch_size, seed=cfg.seed)  # global batches, on the CPU
    train_probe = BatchSampler(train_data, block, cfg.batch_size, seed=cfg.seed + 1, device=device)
    out = Path(out_dir) if out_dir is not None and dist.is_main else None
    meta = {**(meta or {}), "train_config": cfg.to_dict()}
    history, start, elapsed0 = History(), 0, 0.0
    if resume:
        if out_dir is None:
            raise ValueError("resume=True needs out_dir, the folder of the run to continue")
        start, elapsed0 = _load_state(Path(out_dir), raw, opt, scaler)  # every rank reads the same files
        if (Path(out_dir) / METRICS_FILE).is_file():
            history.evals = [e for e in History.from_jsonl(Path(out_dir) / METRICS_FILE).evals if e["iter"] <= start]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        history.to_jsonl(out / METRICS_FILE)  # a fresh file, or the resumed run's evaluations so far
    fwd = torch.compile(raw) if cfg.compile else raw
    fwd = distributed.wrap(fwd, device)  # DDP when several processes: gradients averaged in backward()
    tokens_per_step = cfg.batch_size * block * cfg.grad_accum  # over all ranks
    t0, train_time, window_tokens = time.perf_counter(), 0.0, 0

    signals = _Signals()

    def notify(event: str, info: dict) -> None:
        if not dist.is_main:  # rank 0 alone logs
            return
        for cb in callbacks:
            cb(event, {**info, "model": raw, "tokenizer": tokenizer})
        raw.train()

    def do_eval(it: int) -> None:
        nonlocal train_time, window_tokens
        if not dist.is_main:  # rank 0 alone evaluates (on the unwrapped model: no collectives)
            return
        with autocast:
            tr, _ = _loss_over(raw, (train_probe.batch(i) for i in range(cfg.train_eval_batches)), device, None)
            va = evaluate(raw, val_data, block, cfg.batch_size, cfg.eval_batches, device) if val_data is not None else None
        rec = {"iter": it, "train_loss": tr, "val_loss": va, "lr": lr_at(max(it - 1, 0), cfg),
               "elapsed_s": elapsed0 + time.perf_counter() - t0,
               "tokens_per_s": window_tokens / train_time if train_time > 0 else None}
        train_time, window_tokens = 0.0, 0
        history.evals.append(rec)
        if out is not None:
            with signals.deferred(), open(out / METRICS_FILE, "a") as f:
                f.write(json.dumps(rec) + "\n")
        notify("eval", rec)

    def save(it: int) -> None:
        nonlocal saved
        if out is not None:
            last = history.evals[-1] if history.evals else {}
            info = {"train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"), "eval_step": last.get("iter")}
            with signals.deferred():
                _save_state(out, raw, opt, scaler, tokenizer, it, elapsed0 + time.perf_counter() - t0, cfg,
                            {**meta, **info})
                saved = it

    def run_loop() -> None:
        nonlocal train_time, window_tokens, done
        raw.train()
        if start == 0 and cfg.eval_interval > 0:
            do_eval(0)
        for step in range(start, cfg.max_iters):
            ts = time.perf_counter()
            lr = lr_at(step, cfg)
            set_lr(opt, lr)  # each group: lr x its lr_scale (Muon's groups: muon_lr / learning_rate)
            torch.manual_seed(cfg.seed + 1_000_003 * (step + 1) + dist.rank)  # dropout masks keyed by step
            loss_sum = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                x, y = sampler.batch(step * cfg.grad_accum + micro)  # the global batch, same on every rank
                x, y = _to_device(x[rows], device), _to_device(y[rows], device)  # pinned -> async on CUDA
                last = micro == cfg.grad_accum - 1
                with distributed.sync_context(fwd, sync=last):  # DDP all-reduces on the last micro-step only
                    with autocast:
                        _, loss = fwd(x, y)
                    scaler.scale(loss / cfg.grad_accum).backward()
                loss_sum += loss.detach()
            it = step + 1
            loss_val = distributed.mean_over_ranks(loss_sum.item() / cfg.grad_accum, device)
            if not math.isfinite(loss_val):  # checked before the update: the weights are still step's
                kept = f"the checkpoint of step {saved} in {out} is kept" if out is not None and saved is not None \
                    else "no checkpoint had been saved"
                raise TrainingDiverged(f"the training loss is {loss_val} at step {it} (learning rate {lr:.3g}): "
                                       f"training stopped before that update; {kept}. {DIVERGED_ADVICE}", step=it, saved_step=saved)
            with signals.deferred():  # a signal now waits until the step is complete
                if cfg.grad_clip > 0:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                done = it
            train_time += time.perf_counter() - ts
            window_tokens += tokens_per_step
            history.steps.append({"iter": it, "loss": loss_val, "lr": lr})
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.4f}", refresh=False)
            notify("step", {"iter": it, "loss": loss_val, "lr": lr})
            if it == cfg.max_iters or (cfg.eval_interval > 0 and it % cfg.eval_interval == 0):
                do_eval(it)
            if it == cfg.max_iters or (cfg.ckpt_interval > 0 and it % cfg.ckpt_interval == 0):
                save(it)
        if cfg.max_iters == 0 and not resume:  # nothing to train: evaluate and save the initial model
            if cfg.eval_interval == 0:
                do_eval(0)
            save(0)

    done, saved = start, (start if resume else None)  # the last finished step, the last saved one
    bar = tqdm(total=cfg.max_iters, initial=start, desc="train", dynamic_ncols=True,
               disable=os.environ.get("MINIGPT_PROGRESS") == "0" or not dist.is_main)
    with signals:
        try:
            run_loop()
        except _Stop as stop:
            signals.closing = True  # a second signal now waits for the save below
            if saved != done:
                save(done)
            raise TrainingInterrupted(done, out, stop.signum) from None
        finally:
            bar.close()
    distributed.barrier()  # no rank returns before rank 0 has saved
    return history

