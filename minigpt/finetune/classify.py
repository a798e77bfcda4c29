"""Classification fine-tuning: the genre of a speech, a classification head on a GPT, baselines.

The task comes from our own corpus: a speech's label is the genre of its play, merged into three
well-defined classes (``CLASSES``). The split is by *play*: the test plays are ``VAL_PLAYS``, which
neither pretraining nor fine-tuning ever saw; ``FT_VAL_PLAYS`` (train plays, one per genre folder)
are held out of fine-tuning for validation.

The model replaces the LM head by a linear head on one vector per sequence: the last real token's
hidden state (``pooling="last"``: in a causal model only the last token has read the whole text)
or the mean over the real tokens (``pooling="mean"``).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import VAL_PLAYS, load_plays
from ..model import GPT

CLASSES: tuple[str, ...] = ("comedy", "history", "tragedy")
# Six genre folders -> three classes. Four of the "problem plays" (All's Well, Measure for Measure,
# the Merchant, the Shrew) were printed among the comedies in the First Folio (Troilus, printed there
# between the histories and the tragedies, stays with its folder), and the late
# "romances" (Tempest, Winter's Tale, Cymbeline, Pericles) end in reconciliation, as comedies do;
# the Roman plays are tragedies by name (Julius Caesar, Antony and Cleopatra, Coriolanus, Titus).
GENRE_CLASS: dict[str, str] = {
    "comedies": "comedy", "problems": "comedy", "romances": "comedy",
    "histories": "history",
    "roman": "tragedy", "tragedies": "tragedy",
}
# Fine-tuning validation: one train play per genre folder (never the test plays, VAL_PLAYS).
FT_VAL_PLAYS: tuple[str, ...] = (
    "as-you-like-it", "henry-v", "the-merchant-of-venice", "coriolanus", "a-winter-s-tale", "othello")
SPLITS = ("train", "val", "test")
PAD_ID = 0  # any valid id: padded positions are never read (right padding + causal attention)


@dataclass(frozen=True)
class Example:
    """One labelled text: the speech, its class index into ``CLASSES``, and the play it is from."""

    text: str
    label: int
    play: str


def split_of(slug: str) -> str:
    """``"test"`` for VAL_PLAYS, ``"val"`` for FT_VAL_PLAYS, ``"train"`` for every other play."""
    return "test" if slug in VAL_PLAYS else "val" if slug in FT_VAL_PLAYS else "train"


def genre_examples(split: str, min_chars: int = 200, per_class: int | None = None,
                   seed: int = 0) -> list[Example]:
    """Speeches of at least ``min_chars`` characters from the plays of one split, labelled by class.

    ``per_class`` draws that many speeches of each class at random (``seed``), so the split is
    balanced and the majority baseline is 1/len(CLASSES); ``None`` keeps them all (unbalanced).
    The result is shuffled with the same seed.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    by_class: dict[int, list[Example]] = {i: [] for i in range(len(CLASSES))}
    for play in load_plays():
        if split_of(play.slug) != split:
            continue
        label = CLASSES.index(GENRE_CLASS[play.genre])
        by_class[label] += [Example(s.text, label, play.slug) for s in play.speeches if len(s.text) >= min_chars]
    rng = random.Random(seed)
    out: list[Example] = []
    for label, items in by_class.items():
        if per_class is not None:
            if len(items) < per_class:
                raise ValueError(f"split {split!r} has only {len(items)} speeches of class "
                                 f"{CLASSES[label]!r} with >= {min_chars} characters; ask for fewer")
            items = rng.sample(items, per_class)
        out += items
    rng.shuffle(out)
    return out


def encode_texts(texts: Sequence[str], tokenizer, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (N, T) right-padded with ``PAD_ID`` and lengths (N,); texts cut to ``max_tokens``.

    T is the longest encoded length (at most ``max_tokens``). Truncation keeps the first tokens.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    ids = [tokenizer.encode(t)[:max_tokens] for t in texts]
    if any(len(i) == 0 for i in ids):
        raise ValueError("an empty text encodes to no tokens; drop it first")
    T = max(len(i) for i in ids)
    idx = torch.full((len(ids), T), PAD_ID, dtype=torch.long)
    for row, i in enumerate(ids):
        idx[row, :len(i)] = torch.tensor(i, dtype=torch.long)
    return idx, torch.tensor([len(i) for i in ids], dtype=torch.long)


def pool(h: torch.Tensor, lengths: torch.Tensor, pooling: str = "last") -> torch.Tensor:
    """One vector per sequence from hidden states h (B, T, C): the last real token, or the mean.

    ``lengths`` (B,) counts the real (non-padding) tokens of each row; padding is on the right.
    """
    if pooling == "last":
        return h[torch.arange(h.size(0), device=h.device), lengths - 1]  # (B, C)
    if pooling == "mean":
        mask = (torch.arange(h.size(1), device=h.device)[None, :] < lengths[:, None]).to(h.dtype)  # (B, T)
        return (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")


class GPTClassifier(nn.Module):
    """A GPT body (embeddings, blocks, final LayerNorm) with a linear classification head.

    The GPT's ``lm_head`` is not used (it stays in ``self.gpt``, tied to the embedding).
    ``forward(idx, lengths)`` returns class logits (B, n_classes). ``forward(..., hidden=h,
    start=n)`` starts from hidden states ``h`` after the first ``n`` blocks (see
    :meth:`hidden_at`): frozen bottom blocks need running only once.
    """

    def __init__(self, gpt: GPT, n_classes: int, pooling: str = "last", dropout: float = 0.0) -> None:
        super().__init__()
        if "wpe" not in gpt.transformer:
            raise ValueError("GPTClassifier needs a GPT with learned positions (pos_emb='learned'); "
                             "rotary models are not supported for classification yet")
        if pooling not in ("last", "mean"):
            raise ValueError(f"pooling must be 'last' or 'mean', got {pooling!r}")
        self.gpt, self.pooling = gpt, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        self.gpt._check_input(idx, 0)
        pos = torch.arange(idx.size(1), device=idx.device)
        return self.gpt.transformer.drop(self.gpt.transformer.wte(idx) + self.gpt.transformer.wpe(pos))

    def hidden_at(self, idx: torch.Tensor, n_blocks: int) -> torch.Tensor:
        """Hidden states (B, T, C) after the embeddings and the first ``n_blocks`` blocks."""
        x = self.embed(idx)
        for block in self.gpt.transformer.h[:n_blocks]:
            x = block(x)[0]
        return x

    def features(self, idx: torch.Tensor, lengths: torch.Tensor, hidden: torch.Tensor | None = None,
                 start: int = 0) -> torch.Tensor:
        """The pooled vector (B, C) that the head reads."""
        x = self.embed(idx) if hidden is None else hidden
        for block in self.gpt.transformer.h[start:]:
            x = block(x)[0]
        return pool(self.gpt.transformer.ln_f(x), lengths, self.pooling)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None,
                hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
        if lengths is None:
            lengths = torch.full((idx.size(0),), idx.size(1), dtype=torch.long, device=idx.device)
        return self.head(self.dropout(self.features(idx, lengths, hidden, start)))

    def frozen_prefix(self) -> int:
        """How many bottom blocks (with the embeddings) are entirely frozen: their output is fixed."""
        tr = self.gpt.transformer
        if any(p.requires_grad for p in (*tr.wte.parameters(), *tr.wpe.parameters())):
            return 0
        n = 0
        for block in tr.h:
            if any(p.requires_grad for p in block.parameters()):
                break
            n += 1
        return n


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, a tied weight counted once."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def freeze(model: nn.Module, train_last: int | None = 0) -> tuple[int, int]:
    """Freeze a :class:`GPTClassifier`'s GPT except its last ``train_last`` blocks and ``ln_f``.

    ``train_last=0`` trains only the head (a *linear probe*; ``ln_f`` frozen too); ``None``
    trains everything (full fine-tuning). The head always trains. Returns ``count_parameters``.
    """
    gpt = model.gpt if isinstance(model, GPTClassifier) else model
    n_layer = len(gpt.transformer.h)
    if train_last is not None and not 0 <= train_last <= n_layer:
        raise ValueError(f"train_last must be between 0 and {n_layer} (or None for all), got {train_last}")
    for p in gpt.parameters():
        p.requires_grad_(train_last is None)
    if train_last:
        for block in gpt.transformer.h[n_layer - train_last:]:
            block.requires_grad_(True)
        gpt.transformer.ln_f.requires_grad_(True)
    return count_parameters(model)


def _batches(n: int, batch_size: int, gen: torch.Generator):
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


@torch.no_grad()
def _cached_hidden(model: GPTClassifier, idx: torch.Tensor, n: int, batch_size: int = 64) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return torch.cat([model.hidden_at(idx[i:i + batch_size], n) for i in range(0, len(idx), batch_size)])
    finally:
        model.train(was)


@torch.no_grad()
def predict(model: GPTClassifier, idx: torch.Tensor, lengths: torch.Tensor, batch_size: int = 64,
            hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
    """Predicted class (N,) for every row, in eval mode, ``batch_size`` rows at a time."""
    was = model.training
    model.eval()
    try:
        out = [model(idx[i:i + batch_size], lengths[i:i + batch_size],
                     None if hidden is None else hidden[i:i + batch_size], start).argmax(-1)
               for i in range(0, len(idx), batch_size)]
    finally:
        model.train(was)
    return torch.cat(out)


def train_classifier(model: GPTClassifier, train: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     val: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None, *,
                     steps: int = 200, batch_size: int = 32, lr: float = 1e-3, weight_decay: float = 0.0,
                     warmup: int = 10, eval_every: int = 50, seed: int = 1337,
                     cache_frozen: bool = True) -> dict[str, list]:
    """Fine-tune the trainable parameters of ``model`` with cross-entropy on (idx, lengths, labels).

    AdamW, linear warmup then cosine decay to lr/10, gradient clipping at 1. With
    ``cache_frozen`` the frozen bottom blocks are run once (eval mode) and their outputs reused:
    same result, a fraction of the compute. Returns a history: ``step``, ``loss`` (every step),
    ``eval_step``, ``val_acc``.
    """
    from ..train import TrainConfig, lr_at

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to fine-tune")
    cfg = TrainConfig(max_iters=steps, learning_rate=lr, min_lr=lr / 10, warmup_iters=warmup)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    idx, lengths, labels = train
    n = model.frozen_prefix() if cache_frozen else 0
    hidden = _cached_hidden(model, idx, n) if n else None
    val_hidden = _cached_hidden(model, val[0], n) if (n and val is not None) else None
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "val_acc": []}
    model.train()
    for step, b in zip(range(steps), _batches(len(idx), min(batch_size, len(idx)), gen)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        logits = model(idx[b], lengths[b], None if hidden is None else hidden[b], n)
        loss = F.cross_entropy(logits, labels[b])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist["step"].append(step)
        hist["loss"].append(loss.item())
        if val is not None and ((step + 1) % eval_every == 0 or step == steps - 1):
            pred = predict(model, val[0], val[1], hidden=val_hidden, start=n)
            hist["eval_step"].append(step + 1)
            hist["val_acc"].append(accuracy(pred, val[2]))
    model.eval()
    return hist


def accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of predictions equal to the labels."""
    pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and labels {tuple(labels.shape)} differ in shape")
    return (pred == labels).double().mean().item()


def confusion_matrix(labels: torch.Tensor, pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    labels, pred = torch.as_tensor(labels).long(), torch.as_tensor(pred).long()
    return torch.bincount(labels * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


# ----------------------------------------------------------------------------- baselines

def majority_baseline(train_labels: torch.Tensor, n: int) -> torch.Tensor:
    """Predict the most frequent training class (ties: the smallest index) for ``n`` examples."""
    counts = torch.bincount(torch.as_tensor(train_labels).long())
    return torch.full((n,), int(counts.argmax()), dtype=torch.long)


_WORD = re.compile(r"[a-z']+")


def words(text: str) -> list[str]:
    """Lower-cased words (letters and apostrophes): the bag-of-words baseline's tokens."""
    return _WORD.findall(text.lower())


class BagOfWords:
    """Word-count features over the ``max_words`` most frequent training words: log(1 + count)."""

    def __init__(self, texts: Sequence[str], max_words: int = 5000, min_count: int = 2) -> None:
        counts = Counter(w for t in texts for w in words(t))
        vocab = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        self.vocab = {w: i for i, w in enumerate(vocab[:max_words])}

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        X = torch.zeros(len(texts), len(self.vocab))
        for row, t in enumerate(texts):
            for w, c in Counter(words(t)).items():
                j = self.vocab.get(w)
                if j is not None:
                    X[row, j] = c
        return torch.log1p(X)


class LogisticRegression:
    """Multinomial logistic regression softmax(XW + b), L2-penalised, fitted by full-batch L-BFGS."""

    def __init__(self, l2: float = 1e-3, max_iter: int = 200) -> None:
        self.l2, self.max_iter = l2, max_iter

    def fit(self, X: torch.Tensor, y: torch.Tensor, n_classes: int | None = None) -> "LogisticRegression":
        X, y = X.double(), torch.as_tensor(y).long()
        k = n_classes or int(y.max()) + 1
        self.W = torch.zeros(X.size(1), k, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.W, self.b], max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(X @ self.W + self.b, y) + self.l2 * (self.W ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        return self

    @torch.no_grad()
    def predict(self, X: torch.Tensor) -> torch.Tensor:
        return (X.double() @ self.W + self.b).argmax(-1)
