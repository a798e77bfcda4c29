"""Turning next-token distributions into text: greedy, temperature, top-k, top-p, min-p,
repetition penalty, stop strings, beam search, and the KV cache that makes generation fast.

The logits of the next token go through the same stages as in Hugging Face ``transformers``:

1. **repetition penalty** (Hugging Face's sign-aware form of CTRL's, which divides every seen
   logit): for every token already in the sequence (prompt included), a positive logit is divided
   by the penalty and a negative one multiplied by it;
2. **temperature**: logits / T (T < 1 sharpens, T > 1 flattens); as T -> 0 only the argmax is
   left, so in :func:`process_logits` T = 0 means that limit, and sampling at T = 0 is an error
   (use ``do_sample=False``);
3. **top-k**: keep the k largest logits;
4. **top-p** (nucleus): keep the smallest set of most likely tokens whose probability mass is
   at least p (the most likely token is always kept);
5. **min-p**: keep tokens whose probability is at least ``min_p`` times the top probability;
6. softmax, then one draw from the distribution (``torch.multinomial``).

Removed tokens get logit ``-inf`` (probability 0). Greedy decoding (``do_sample=False``) applies
the repetition penalty and takes the argmax; the other stages never change the argmax, so they
are skipped.

The KV cache computes each position's keys and values once: the prompt is run once (prefill),
then one token per step. GPT-2 style models have *learned absolute* position embeddings, so the
cache cannot slide past ``block_size``: once the sequence is longer than the context, each step
recomputes the last ``block_size`` tokens, exactly as uncached generation does. Rotary models
(``pos_emb="rope"``) do the same: their cached keys are rotated by absolute positions, which a
shifted window would renumber, so past the context the cache is dropped as well. Cached and
uncached generation therefore give the same tokens; the cache only speeds up generation within
the context window.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import torch
import torch.nn as nn

from .checkpoint import unwrap_model

STAGES = ("raw", "repetition_penalty", "temperature", "top_k", "top_p", "min_p")


# --------------------------------------------------------------------------- argument checks

def _check_args(temperature: float, top_k: int | None, top_p: float | None, min_p: float | None,
                repetition_penalty: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or math.isnan(temperature):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 (or None to disable), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1] (or None to disable), got {top_p!r}")
    if min_p is not None and not (isinstance(min_p, (int, float)) and 0 <= min_p <= 1):
        raise ValueError(f"min_p must be in [0, 1] (or None to disable), got {min_p!r}")
    if not isinstance(repetition_penalty, (int, float)) or not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 = off, > 1 discourages repeats), "
                         f"got {repetition_penalty!r}")


def _check_count(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


# --------------------------------------------------------------------------- the logits pipeline

def _stages(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
            top_p: float | None = None, min_p: float | None = None, repetition_penalty: float = 1.0,
            prev_ids: torch.Tensor | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (stage name, logits after that stage) for logits (B, V), in the order of STAGES."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    neg_inf = float("-inf")
    x = logits.to(torch.float32, copy=True)  # never hand back (or modify) the caller's tensor
    yield "raw", x

    if repetition_penalty != 1.0 and prev_ids is not None and prev_ids.numel() > 0:
        prev_ids = prev_ids.to(x.device).long().reshape(x.size(0), -1)  # (B, L)
        seen = x.gather(1, prev_ids)  # (B, L): logits of tokens already in the sequence
        seen = torch.where(seen > 0, seen / repetition_penalty, seen * repetition_penalty)
        x = x.scatter(1, prev_ids, seen)
    yield "repetition_penalty", x

    if temperature == 0:  # greedy: only the most likely token survives
        keep = torch.zeros_like(x, dtype=torch.bool).scatter(1, x.argmax(-1, keepdim=True), True)
        x = x.masked_fill(~keep, neg_inf)
    elif temperature != 1.0:
        x = x / temperature
    yield "temperature", x

    if top_k is not None and top_k < x.size(-1):
        keep = torch.zeros_like(x, dtype=torch.bool).scatter(1, x.topk(top_k, dim=-1).indices, True)
        x = x.masked_fill(~keep, neg_inf)  # exactly k survive, even with ties
    yield "top_k", x

    if top_p is not None and top_p < 1.0:
        probs, order = torch.softmax(x, dim=-1).sort(dim=-1, descending=True, stable=True)  # (B, V)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
        drop_sorted = mass_before >= top_p  # the set already reached p without this token
        drop_sorted[:, 0] = False  # the most likely token always stays
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        x = x.masked_fill(drop, neg_inf)
    yield "top_p", x

    if min_p is not None and min_p > 0:
        probs = torch.softmax(x, dim=-1)
        x = x.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, neg_inf)
    yield "min_p", x


def process_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None, min_p: float | None = None,
                   repetition_penalty: float = 1.0, prev_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The sampling pipeline as a pure function: next-token logits (B, V) -> processed logits (B, V).

    Stages, in order: repetition penalty over ``prev_ids`` (B, L) -> temperature (0 = keep only the
    argmax) -> top-k -> top-p -> min-p. Removed tokens are ``-inf``; ``softmax`` of the result is
    the distribution :func:`generate` samples from. The input is not modified; float32 out.
    """
    _check_args(temperature, top_k, top_p, min_p, repetition_penalty)
    for _, x in _stages(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                        repetition_penalty=repetition_penalty, prev_ids=prev_ids):
        pass
    return x


def _as_batch(idx: torch.Tensor | Sequence[int], device: torch.device) -> torch.Tensor:
    """Token ids as a (B, T) long tensor on ``device``; (T,) and lists become one row."""
    if not isinstance(idx, torch.Tensor):
        idx = torch.as_tensor(list(idx), dtype=torch.long)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise TypeError(f"idx must hold integer token ids, got dtype {idx.dtype}")
    if idx.dim() == 1:
        idx = idx[None]
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ValueError(f"idx must be token ids of shape (T,) or (B, T) with T >= 1, got {tuple(idx.shape)}")
    return idx.to(device=device, dtype=torch.long)


@torch.no_grad()
def next_token_distributions(model: nn.Module, idx: torch.Tensor | Sequence[int], *,
                             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                             min_p: float | None = None, repetition_penalty: float = 1.0
                             ) -> dict[str, torch.Tensor]:
    """The next-token probabilities after each stage of the pipeline, for plots.

    Returns ``{"raw", "repetition_penalty", "temperature", "top_k", "top_p", "min_p"}`` -> probability
    vectors (V,) for a single sequence idx (T,), or (B, V) for a batch (B, T); a disabled stage
    repeats the previous one. The last entry is the distribution :func:`generate` samples from.
    The context is cropped to the model's last ``block_size`` tokens.
    """
    _check_args(temperature, top_k, top_p, min_p, repetition_penalty)
    model = unwrap_model(model)
    ids = _as_batch(idx, _device_of(model))
    single = (idx.dim() if isinstance(idx, torch.Tensor) else torch.as_tensor(list(idx)).dim()) == 1
    with _eval_mode(model):
        logits = _NextLogits(model, use_cache=False)(ids)
    out = {name: torch.softmax(x, dim=-1)
           for name, x in _stages(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                  repetition_penalty=repetition_penalty, prev_ids=ids)}
    return {k: (v[0] if single else v) for k, v in out.items()}


# --------------------------------------------------------------------------- decoding with or without a cache

def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _NextLogits:
    """Next-token logits (B, V) for a growing sequence, with or without a KV cache.

    Call it with the whole sequence so far (B, L). With the cache, the first call (or any call
    that cannot continue the cache) prefills, later calls feed only the newest token. Past
    ``block_size`` it recomputes the last ``block_size`` tokens, exactly like the uncached path.
    """

    def __init__(self, model: nn.Module, use_cache: bool) -> None:
        self.model = model
        self.use_cache = use_cache
        self.block_size = model.config.block_size
        self.cache = None

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        B, L = idx.shape
        if self.use_cache and L <= self.block_size:
            if self.cache is not None and self.cache.pos == L - 1 and self.cache.batch_size == B:
                logits = self.model(idx[:, -1:], kv_cache=self.cache, last_only=True)[0]  # one new token
            else:
                self.cache = self.model.new_kv_cache(B)
                logits = self.model(idx, kv_cache=self.cache, last_only=True)[0]  # prefill the prompt
        else:
            self.cache = None  # the cache cannot slide past block_size (learned or rotary positions)
            logits = self.model(idx[:, -self.block_size:], last_only=True)[0]
        return logits[:, -1, :].float()  # (B, V)

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the cache rows of ``index`` (beam search follows the surviving beams)."""
        if self.cache is not None:
            self.cache.reorder(index)


class _eval_mode:
    """Run a model in eval mode (no dropout) and restore its training flag afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        self.model.train(self.was_training)


# --------------------------------------------------------------------------- sampling

@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor | Sequence[int], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             min_p: float | None = None, repetition_penalty: float = 1.0, do_sample: bool = True,
             num_samples: int = 1, seed: int | None = None, stop: str | Sequence[str] | None = None,
             tokenizer: Any | None = None, use_cache: bool = True) -> torch.Tensor:
    """Continue token sequences by sampling (or greedy decoding) one token at a time.

    Args:
        model: a :class:`~minigpt.model.GPT` (compiled / DDP-wrapped is fine); it runs in eval
            mode (no dropout) and its training flag is restored afterwards.
        idx: the prompt ids, (T,), (B, T) or a list of ints.
        max_new_tokens: how many tokens to add (>= 0).
        temperature: logits / temperature before sampling (> 0 when ``do_sample``; the limit
            T -> 0 is greedy decoding, which is ``do_sample=False``).
        top_k, top_p, min_p, repetition_penalty: see :func:`process_logits` (None / 1.0 = off).
        do_sample: False for greedy decoding (argmax after the repetition penalty).
        num_samples: continuations per prompt; rows come out as prompt 0's samples, then prompt 1's…
        seed: seeds a private ``torch.Generator`` on the model's device, so the same seed gives the
            same text; None uses PyTorch's global random state.
        stop: a string or strings; needs ``tokenizer``. A row whose decoded continuation contains
            one is finished; generation ends early when every row is finished. Rows keep the same
            length, so finished rows go on past their stop string: :func:`generate_text` cuts them.
        use_cache: use a KV cache (same tokens as without, faster).

    Returns:
        (B * num_samples, T + n) token ids on the model's device, prompt included; n is
        ``max_new_tokens`` unless every row hit a stop string earlier.
    """
    _check_args(temperature, top_k, top_p, min_p, repetition_penalty)
    if do_sample and temperature == 0:
        raise ValueError("temperature=0 with do_sample=True cannot sample (every token but one has probability 0); "
                         "for greedy decoding pass do_sample=False, or use a temperature > 0")
    _check_count("max_new_tokens", max_new_tokens, 0)
    _check_count("num_samples", num_samples, 1)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if stops and tokenizer is None:
        raise ValueError("stop strings need tokenizer=... to decode the generated tokens")
    if any(not isinstance(s, str) or not s for s in stops):
        raise ValueError(f"stop must be a non-empty string or a list of them, got {stop!r}")

    model = unwrap_model(model)
    device = _device_of(model)
    idx = _as_batch(idx, device)
    if num_samples > 1:
        idx = idx.repeat_interleave(num_samples, dim=0)  # (B * num_samples, T)
    greedy = not do_sample
    # torch.multinomial on MPS can return zero-probability tokens (see minigpt.device.pick_device):
    # draw there on the CPU, from a (B, V) copy of the probabilities
    draw_on = torch.device("cpu") if device.type == "mps" else device
    gen = torch.Generator(device=draw_on).manual_seed(seed) if (seed is not None and not greedy) else None
    T0 = idx.size(1)
    finished = [False] * idx.size(0)

    with _eval_mode(model):
        next_logits = _NextLogits(model, use_cache)
        for step in range(max_new_tokens):
            logits = next_logits(idx)  # (B, V)
            if greedy:
                logits = process_logits(logits, repetition_penalty=repetition_penalty, prev_ids=idx)
                nxt = logits.argmax(dim=-1)  # (B,)
            else:
                logits = process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p,
                                        min_p=min_p, repetition_penalty=repetition_penalty, prev_ids=idx)
                probs = torch.softmax(logits, dim=-1).to(draw_on)  # (B, V)
                nxt = torch.multinomial(probs, 1, generator=gen).squeeze(1).to(device)  # (B,)
            idx = torch.cat([idx, nxt[:, None]], dim=1)  # (B, T + step + 1)
            if stops:
                for r in range(idx.size(0)):
                    if not finished[r]:
                        text = tokenizer.decode(idx[r, T0:].tolist())
                        finished[r] = any(s in text for s in stops)
                if all(finished):
                    break
    return idx


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    cuts = [text.find(s) for s in stops if s in text]
    return text[:min(cuts)] if cuts else text


def generate_text(model: nn.Module, tokenizer: Any, prompt: str, max_new_tokens: int = 200,
                  **kw: Any) -> list[str]:
    """Generate continuations of a text prompt; returns the new text only, one string per sample.

    Keyword arguments go to :func:`generate` (temperature, top_k, top_p, min_p,
    repetition_penalty, do_sample, num_samples, seed, stop, use_cache). With ``stop``, each
    continuation is cut just before the first stop string (the stop string is not included).
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if prompt == "":
        raise ValueError("prompt is empty: a GPT predicts the next token from at least one token of "
                         "context; start from e.g. '\\n' or a speaker name")
    ids = tokenizer.encode(prompt)  # unknown characters raise the tokenizer's own clear error
    if len(ids) == 0:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens; give a longer prompt")
    out = generate(model, ids, max_new_tokens, tokenizer=tokenizer, **kw)
    stop = kw.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return [_cut_at_stop(tokenizer.decode(row[len(ids):].tolist()), stops) for row in out]


# --------------------------------------------------------------------------- beam search

def _beam_score(logprob: float, length: int, length_penalty: float) -> float:
    return logprob / (length ** length_penalty) if length > 0 else logprob


@torch.no_grad()
def beam_search(model: nn.Module, idx: torch.Tensor | Sequence[int], max_new_tokens: int, *,
                num_beams: int = 4, length_penalty: float = 1.0, eos_id: int | None = None,
                use_cache: bool = True, early_stopping: bool = True) -> list[tuple[torch.Tensor, float]]:
    """Beam search: keep the ``num_beams`` most likely continuations at every step.

    Each step extends every live beam by every token and keeps the ``num_beams`` best by total
    log-probability. A beam that produces ``eos_id`` is finished (the eos token included). The
    search stops after ``max_new_tokens``, or (``early_stopping``) as soon as no live beam can
    beat the ``num_beams``-th best finished one: a live beam's log-probability can only fall,
    which bounds its best possible final score, so stopping early never changes the result.
    ``num_beams=1`` is greedy decoding.

    Returns:
        up to ``num_beams`` pairs ``(ids, score)``, best first: ids (T + n,) is the prompt plus the
        continuation, score = sum of log-probabilities of the n generated tokens / n^length_penalty
        (``length_penalty > 0`` favours longer sequences, 0 compares plain log-probabilities).
    """
    _check_count("max_new_tokens", max_new_tokens, 0)
    _check_count("num_beams", num_beams, 1)
    if not isinstance(length_penalty, (int, float)) or isinstance(length_penalty, bool) or math.isnan(length_penalty):
        raise ValueError(f"length_penalty must be a number, got {length_penalty!r}")
    model = unwrap_model(model)
    device = _device_of(model)
    V = model.config.vocab_size
    if eos_id is not None and not (isinstance(eos_id, int) and 0 <= eos_id < V):
        raise ValueError(f"eos_id must be a token id in 0..{V - 1}, got {eos_id!r}")
    beams = _as_batch(idx, device)  # (1, T)
    if beams.size(0) != 1:
        raise ValueError(f"beam_search continues one prompt: idx must be (T,) or (1, T), got {tuple(beams.shape)}")
    T0 = beams.size(1)
    score_on = torch.device("cpu") if device.type == "mps" else device  # MPS has no float64
    beam_lp = torch.zeros(1, dtype=torch.float64, device=score_on)  # (n_live,) sum of log-probabilities
    finished: list[tuple[torch.Tensor, float]] = []

    with _eval_mode(model):
        next_logits = _NextLogits(model, use_cache)
        for step in range(max_new_tokens):
            n = step + 1  # generated length after this step
            logp = torch.log_softmax(next_logits(beams).to(score_on).double(), dim=-1)  # (n_live, V)
            cand = (beam_lp[:, None] + logp).reshape(-1)  # (n_live * V,)
            order = cand.sort(descending=True, stable=True).indices[: 2 * num_beams]
            keep_rows, keep_tokens, keep_lp = [], [], []
            for c in order.tolist():
                row, tok = divmod(c, V)
                if eos_id is not None and tok == eos_id:
                    seq = torch.cat([beams[row], beams.new_tensor([tok])])
                    finished.append((seq, _beam_score(float(cand[c]), n, length_penalty)))
                else:
                    keep_rows.append(row)
                    keep_tokens.append(tok)
                    keep_lp.append(cand[c])
                if len(keep_rows) == num_beams:
                    break
            if not keep_rows:
                beams = beams[:0]
                break
            rows = torch.tensor(keep_rows, device=device)
            beams = torch.cat([beams[rows], torch.tensor(keep_tokens, device=device)[:, None]], dim=1)
            beam_lp = torch.stack(keep_lp)
            next_logits.reorder(rows)
            if early_stopping and eos_id is not None and len(finished) >= num_beams and n < max_new_tokens:
                worst_kept = sorted(s for _, s in finished)[-num_beams]
                # log-probabilities only fall, so the best a live beam can reach is its current sum
                # divided by the largest length^penalty (penalty > 0) or the smallest (penalty <= 0)
                length = max_new_tokens if length_penalty > 0 else n + 1
                best_future = _beam_score(float(beam_lp.max()), length, length_penalty)
                if best_future <= worst_kept:
                    beams = beams[:0]
                    break

    n_gen = beams.size(1) - T0
    finished += [(beams[i], _beam_score(float(beam_lp[i]), n_gen, length_penalty)) for i in range(beams.size(0))]
    finished.sort(key=lambda pair: pair[1], reverse=True)
    return finished[:num_beams]
