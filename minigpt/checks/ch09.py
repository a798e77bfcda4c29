"""Checks for chapter 09, from GPT-2 to a modern LLM: rotary embedding at any start position
(09.1), the parameter count of a model with every architecture option (09.2), the bytes of a
KV cache (09.3), a multi-head checkpoint's keys and values mean-pooled into GQA heads (09.4) and
the most key/value heads whose cache fits a memory budget (09.5).

Each reference is computed here, independently of the code a learner could call: 09.1 rotates
with complex numbers in float64 (not :mod:`minigpt.rope`'s cos/sin form), 09.2 counts the
tensors of a real ``GPT`` built on the meta device, 09.3 counts the bytes of a real ``KVCache``'s
tensors, 09.5 tries every divisor of n_head against the bytes of such a cache. A wrong answer is
compared with the usual mistakes, one by one, to name the likely one.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..attention import KVCache
from ..config import GPTConfig
from ..model import GPT
from . import CheckFailed, draw, fail, forbids, is_hidden, passed, seeded

__all__ = ["check_rope", "check_param_count", "check_kv_cache_bytes", "check_mha_to_gqa", "check_kv_heads_that_fit",
           "CheckFailed"]


def _call(fn: Callable, *args, what: str):
    with torch.random.fork_rng(devices=[]):
        try:
            return fn(*(a.clone() if isinstance(a, torch.Tensor) else a for a in args))
        except CheckFailed:
            raise
        except Exception as e:  # noqa: BLE001 - any crash becomes a one-line message
            if isinstance(e, TypeError) and "NoneType" in str(e) and any(
                    isinstance(a, GPTConfig) and a.n_kv_head is None for a in args):
                fail(f"{what} raised TypeError ({e}): n_kv_head is None for multi-head attention; use cfg.kv_heads "
                     "(n_kv_head, or n_head when it is None)")
            fail(f"{what} raised {type(e).__name__}: {e}")


def _as_int(got, what: str) -> int:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, float) and got.is_integer():
        got = int(got)
    if not isinstance(got, int) or isinstance(got, bool):
        fail(f"{what} should be an int, got {got!r}")
    return got


# --- 09.1 rotary embedding ------------------------------------------------------------------

def _rope_complex(x: torch.Tensor, start: int, theta: float, *, layout: str = "half", sign: float = 1.0,
                  exponent: float = 2.0, offset: int = 0) -> torch.Tensor:
    """Rotate x (..., T, d) by positions start, start+1, … as complex numbers, in float64.

    Pair i is (x[i], x[i + d/2]) ("half", the Llama / Hugging Face layout) or (x[2i], x[2i+1])
    ("interleaved", the RoFormer paper's); it turns by pos·theta^(-exponent·i/d). ``sign``,
    ``exponent`` and ``offset`` other than their defaults give the usual mistakes."""
    x = x.double()
    T, d = x.shape[-2], x.shape[-1]
    i = torch.arange(d // 2, dtype=torch.float64)
    pos = torch.arange(T, dtype=torch.float64) + start + offset
    angle = sign * pos[:, None] * theta ** (-exponent * i / d)  # (T, d/2)
    turn = torch.polar(torch.ones_like(angle), angle)  # e^{i·angle}
    if layout == "half":
        z = torch.complex(x[..., : d // 2], x[..., d // 2:]) * turn
        return torch.cat((z.real, z.imag), -1)
    z = torch.complex(x[..., 0::2], x[..., 1::2]) * turn
    return torch.stack((z.real, z.imag), -1).flatten(-2)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=1e-3, rtol=1e-3))


@forbids('minigpt.rope.apply_rope', 'minigpt.rope.rope_cos_sin', 'minigpt.rope.rotate_half',
         'minigpt.model.GPT.rotary')
def check_rope(fn: Callable) -> None:
    """Check ``fn(x, start, base) -> x rotated``: x (B, H, T, d) holds queries (or keys) at
    absolute positions start, …, start + T − 1; pair i = (x[..., i], x[..., i + d/2]) turns by the
    angle pos·base^(−2i/d)."""
    cases = [((1, 2, 5, 8), 0, 10000.0), ((2, 3, 4, 16), 7, 10000.0), ((1, 1, 3, 4), 100, 100.0)]
    if is_hidden():  # other shapes, starts (a long prefix in the cache) and bases
        r = draw(91)
        cases = [((r.randint(1, 3), r.randint(1, 4), r.randint(1, 9), 2 * r.randint(1, 16)), r.randint(1, 2000),
                  r.choice([10000.0, 500000.0, 1e6])),
                 ((1, r.randint(1, 3), r.randint(2, 6), 2 * r.randint(2, 8)), 0, r.uniform(50.0, 5e4)),
                 ((r.randint(1, 2), 2, 1, 2 * r.randint(1, 12)), r.randint(1, 600), 10000.0)]
    for k, (shape, start, theta) in enumerate(cases):
        g = torch.Generator().manual_seed(seeded(90 + k))
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        ref = _rope_complex(x, start, theta)
        got = _call(fn, x, start, theta, what="your rotary function")
        try:
            got = torch.as_tensor(got).detach().double()
        except (TypeError, ValueError, RuntimeError):
            fail(f"your rotary function should return a tensor, got {type(got).__name__}")
        if got.shape != ref.shape:
            fail(f"return a tensor of x's shape {tuple(ref.shape)}, got {tuple(got.shape)}")
        if _close(got, ref):
            continue
        where = f"(x of shape {tuple(shape)}, start={start}, base={theta:g})"
        for value, msg in (
            (x, "nothing was rotated: turn each pair by the angle pos·base^(-2i/d)"),
            (_rope_complex(x, 0, theta), "you rotated as if the first row sat at position 0: the rows are at "
                                         "positions start, start+1, …"),
            (_rope_complex(x, start, theta, offset=1), "off by one: the first row sits at position start, "
                                                       "not start + 1"),
            (_rope_complex(x, start, theta, offset=-1), "off by one: the first row sits at position start, "
                                                        "not start − 1"),
            (_rope_complex(x, start, theta, sign=-1.0), "you turned the wrong way (by −angle): the first half "
                                                        "becomes x₁·cos − x₂·sin, the second x₂·cos + x₁·sin"),
            (_rope_complex(x, start, theta, layout="interleaved"), "you paired neighbours (x[2i], x[2i+1]); "
                                                                   "this model pairs x[i] with x[i + d/2]"),
            (_rope_complex(x, start, theta, exponent=1.0), "your angular speeds are base^(-i/d); they are "
                                                           "base^(-2i/d) for pair i = 0 … d/2 − 1"),
            (_rope_complex(x, start, theta, exponent=4.0), "your angular speeds are base^(-2i/(d/2)); they "
                                                           "are base^(-2i/d), d the full head size"),
        ):
            if _close(got, value) and not _close(value, ref):
                fail(f"{msg} {where}")
        worst = (got - ref).abs().max().item()
        fail(f"your rotated tensor differs from the rotation by pos·base^(-2i/d) {where} "
             f"(largest difference {worst:.3g})")
    passed("rotary embedding at any start position: each pair (x[i], x[i + d/2]) turned by pos·base^(−2i/d)")


# --- 09.2 parameter count ---------------------------------------------------------------------

def _formula(cfg: GPTConfig, mistake: str = "") -> int:
    """The parameters of GPT(cfg) by formula, or with one named mistake (for the messages)."""
    C, V, L, H, hs, F = cfg.n_embd, cfg.vocab_size, cfg.n_layer, cfg.n_head, cfg.head_size, cfg.ffn_width
    kv = H if mistake == "kv" else cfg.kv_heads
    rms = cfg.norm == "rmsnorm"
    norm = C + (C if cfg.bias and (not rms or mistake == "rms_bias") else 0)
    qkv = (H + 2 * kv) * hs
    qkv_has_bias = cfg.bias if mistake == "attn_bias" else cfg.attn_bias
    attn = C * qkv + (qkv if qkv_has_bias else 0) + C * C + (C if cfg.bias else 0)
    if cfg.qk_norm and mistake != "qk_norm":
        attn += 2 * hs
    gated = cfg.activation == "swiglu" and mistake != "two_matrices"
    if mistake == "swiglu_4c" and cfg.activation == "swiglu":
        F = 4 * C
    up = 2 if gated else 1
    ffn = (up + 1) * C * F + ((up * F + C) if cfg.bias else 0)
    n = V * C + L * (2 * norm + attn + ffn) + norm
    if cfg.pos_emb == "learned" or mistake == "wpe":
        n += cfg.block_size * C
    if (not cfg.tie_weights and mistake != "untied") or (cfg.tie_weights and mistake == "tied_twice"):
        n += V * C
    return n


_COUNT_MISTAKES = {
    "kv": "the Q/K/V projection has (n_head + 2·n_kv_head)·head_size outputs: with grouped-query attention "
          "only n_kv_head key and value heads",
    "rms_bias": "RMSNorm has a gain and no bias (even with bias=True); LayerNorm has both",
    "qk_norm": "qk_norm adds two RMSNorm gains of head_size per layer (one for queries, one for keys)",
    "two_matrices": "SwiGLU has three matrices (gate, up, down), each with its bias when bias=True",
    "swiglu_4c": "config.ffn_width is SwiGLU's inner width (2/3·4·n_embd rounded up to a multiple of 8, or "
                 "ffn_hidden), not 4·n_embd",
    "wpe": "rotary positions have no table: no wpe when pos_emb='rope'",
    "untied": "with tie_weights=False the output head has its own vocab_size × n_embd matrix",
    "tied_twice": "a tied head IS the token embedding: count that matrix once",
    "attn_bias": "the Q/K/V projection's bias follows cfg.attn_bias (qkv_bias when set, else bias): qkv_bias=True "
                 "gives c_attn a bias even with bias=False, qkv_bias=False removes it even with bias=True",
}


def _random_config(r, vocab: int | None = None) -> GPTConfig:
    nh = r.choice([2, 4, 6, 8])
    kv = r.choice([d for d in range(1, nh + 1) if nh % d == 0])
    return GPTConfig(vocab_size=vocab or r.randint(10, 300), block_size=r.randint(8, 256), n_layer=r.randint(1, 6),
                     n_head=nh, n_embd=nh * 2 * r.randint(2, 12), bias=r.random() < 0.5,
                     norm=r.choice(["layernorm", "rmsnorm"]), pos_emb=r.choice(["learned", "rope"]),
                     activation=r.choice(["gelu", "relu2", "swiglu", "swiglu"]),
                     ffn_hidden=r.choice([None, None, 8 * r.randint(4, 40)]),
                     n_kv_head=r.choice([None, kv, 1]), qk_norm=r.random() < 0.5, tie_weights=r.random() < 0.5,
                     qkv_bias=r.choice([None, None, True, False]))


@forbids('minigpt.model.GPT.num_params', 'minigpt.model.GPT.__init__', 'minigpt.model.Block.__init__',
         'minigpt.model.FeedForward.__init__', 'minigpt.attention.CausalSelfAttention.__init__')
def check_param_count(fn: Callable) -> None:
    """Check ``fn(cfg) -> int``: the parameters of ``GPT(cfg)`` for any architecture option
    (norm, pos_emb, activation, ffn_hidden, n_kv_head, qk_norm, tie_weights, bias, qkv_bias), a
    tied head counted once; against the tensors of a real model built here."""
    base = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    configs = [GPTConfig(**base),
               GPTConfig(**base, norm="rmsnorm", pos_emb="rope", activation="swiglu", n_kv_head=2),
               GPTConfig(**base, norm="rmsnorm", pos_emb="rope", activation="swiglu", n_kv_head=2, qk_norm=True,
                         tie_weights=False, bias=False),
               GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=6, n_embd=48, n_kv_head=1,
                         activation="swiglu", ffn_hidden=96, bias=False, qkv_bias=True)]
    if is_hidden():  # three configurations that between them hold every option (each mistake shows in
        r = draw(92)  # every grading run), then three drawn at random
        def sized(**opts):
            nh = r.choice([4, 8])
            return GPTConfig(vocab_size=r.randint(10, 300), block_size=r.randint(8, 256), n_layer=r.randint(1, 6),
                             n_head=nh, n_embd=nh * 2 * r.randint(2, 12), **opts)
        configs = [sized(norm="rmsnorm", bias=True, pos_emb="rope", activation="swiglu", n_kv_head=2, qk_norm=True),
                   sized(bias=r.random() < 0.5, activation=r.choice(["gelu", "relu2"]), tie_weights=False,
                         qkv_bias=True),
                   sized(norm="rmsnorm", bias=True, activation="swiglu", ffn_hidden=8 * r.randint(4, 40),
                         n_kv_head=1, tie_weights=False)]
        configs += [_random_config(r) for _ in range(3)]
    for cfg in configs:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # shapes only: instant, no memory
            ref = sum(p.numel() for p in GPT(cfg).parameters())  # shared tensors once
        got = _as_int(_call(fn, cfg, what="your parameter count"), "your parameter count")
        if got == ref:
            continue
        for mistake, msg in _COUNT_MISTAKES.items():
            if _formula(cfg, mistake) == got != ref:
                fail(f"{msg} (your count is off by {got - ref:+,} for this config)")
        fail(f"your count {got:,} differs from the model's {ref:,} (off by {got - ref:+,}) for GPTConfig("
             f"n_layer={cfg.n_layer}, n_head={cfg.n_head}, n_kv_head={cfg.n_kv_head}, n_embd={cfg.n_embd}, "
             f"norm={cfg.norm!r}, pos_emb={cfg.pos_emb!r}, activation={cfg.activation!r}, "
             f"ffn_hidden={cfg.ffn_hidden}, bias={cfg.bias}, qkv_bias={cfg.qkv_bias}, qk_norm={cfg.qk_norm}, "
             f"tie_weights={cfg.tie_weights}); count each module's tensors as in chapter 03, section 9")
    passed("parameter count of any configuration: equal to the tensors of GPT(config)")


# --- 09.3 KV-cache bytes ------------------------------------------------------------------------

_DTYPES = {1: torch.float8_e4m3fn, 2: torch.bfloat16, 4: torch.float32, 8: torch.float64}


def _cache_bytes(cfg: GPTConfig, seq_len: int, batch_size: int, nbytes: int) -> int:
    """Bytes of the tensors of a real KVCache of seq_len positions (built on the meta device)."""
    sized = GPTConfig.from_dict({**cfg.to_dict(), "block_size": seq_len})
    cache = KVCache(sized, batch_size, device="meta", dtype=_DTYPES[nbytes])
    return sum(t.numel() * t.element_size() for t in cache.k + cache.v)


@forbids('minigpt.config.GPTConfig.kv_cache_bytes_per_token', 'minigpt.attention.KVCache.__init__',
         'minigpt.attention.KVCache.bytes_per_token', 'minigpt.model.GPT.new_kv_cache')
def check_kv_cache_bytes(fn: Callable) -> None:
    """Check ``fn(cfg, seq_len, batch_size, bytes_per_element) -> int``: the bytes a KV cache
    needs for ``batch_size`` sequences of ``seq_len`` tokens, against a real ``KVCache``."""
    # each mistake gives another number on the first case where it shows (no two share a factor there)
    cases = [(GPTConfig(n_layer=3, n_head=4, n_embd=128), 64, 1, 4),
             (GPTConfig(n_layer=4, n_head=4, n_embd=128, n_kv_head=2), 64, 1, 4),
             (GPTConfig(n_layer=6, n_head=8, n_embd=256, n_kv_head=1), 512, 3, 2)]
    if is_hidden():
        r = draw(93)
        nh = r.choice([4, 8])  # the first case shows every mistake: GQA, several layers, a batch, > 1 byte
        first = GPTConfig(n_layer=r.randint(2, 6), n_head=nh, n_embd=nh * 2 * r.randint(2, 12),
                          n_kv_head=r.choice([1, nh // 2]))
        cases = [(first, r.choice([r.randint(1, 63), r.randint(65, 4096)]), r.randint(2, 8), r.choice([2, 4, 8]))]
        cases += [(_random_config(r, vocab=65), r.randint(1, 4096), r.randint(1, 8), r.choice([1, 2, 4, 8]))
                  for _ in range(4)]
    for cfg, T, B, nbytes in cases:
        ref = _cache_bytes(cfg, T, B, nbytes)
        got = _as_int(_call(fn, cfg, T, B, nbytes, what="your KV-cache size"), "your KV-cache size")
        if got == ref:
            continue
        L, H, kv, hs = cfg.n_layer, cfg.n_head, cfg.kv_heads, cfg.head_size
        for value, msg in (
            (2 * L * H * hs * T * B * nbytes, "you stored every query head's keys and values: the cache holds "
                                              "only the n_kv_head key/value heads"),
            (L * kv * hs * T * B * nbytes, "you counted the keys only: the cache stores keys AND values (× 2)"),
            (2 * kv * hs * T * B * nbytes, "you counted one layer: every layer keeps its own keys and values"),
            (2 * L * kv * hs * T * nbytes, "you counted one sequence: the cache holds batch_size of them"),
            (2 * L * kv * hs * T * B * nbytes * 8, "that is bits: count bytes (bytes_per_element per number)"),
            (2 * L * kv * hs * T * B, "you counted numbers: multiply by bytes_per_element"),
            (2 * L * kv * hs * cfg.block_size * B * nbytes, "you sized the cache for block_size tokens: count "
                                                            "seq_len tokens"),
        ):
            if got == value != ref:
                fail(msg)
        fail(f"your {got:,} bytes differ from a real cache's {ref:,} (n_layer={L}, n_head={H}, n_kv_head="
             f"{cfg.n_kv_head}, head_size={hs}, seq_len={T}, batch_size={B}, {nbytes} bytes per number)")
    passed("KV-cache bytes: 2 (K and V) · n_layer · n_kv_head · head_size · seq_len · batch · bytes, as a real cache")


# --- 09.4 multi-head -> grouped-query by mean-pooling ------------------------------------------

def _pool(w: torch.Tensor, n_head: int, n_kv: int, *, how: str = "mean", strided: bool = False,
          pool_q: bool = False) -> torch.Tensor:
    """Mean-pool the K and V heads of a fused (3C, C) weight into n_kv heads each (Ainslie et al.
    2023, §2.1), or one of the usual mistakes."""
    C = w.shape[1]
    hs, group = C // n_head, n_head // n_kv

    def heads(block: torch.Tensor) -> torch.Tensor:  # (n_head·hs, C) -> (n_kv·hs, C)
        h = block.reshape(n_head, hs, C)
        h = h.reshape(group, n_kv, hs, C).transpose(0, 1) if strided else h.reshape(n_kv, group, hs, C)
        out = {"mean": h.mean(1), "sum": h.sum(1), "first": h[:, 0]}[how]
        return out.reshape(n_kv * hs, C)

    q, k, v = w.split(C, dim=0)
    return torch.cat((heads(q) if pool_q else q, heads(k), heads(v)), dim=0)


def check_mha_to_gqa(fn: Callable) -> None:
    """Check ``fn(w_qkv, n_head, n_kv_head) -> weight``: the fused (3C, C) ``c_attn.weight`` of a
    multi-head layer (rows: queries, keys, values; head h = rows h·hs … (h+1)·hs − 1 of each)
    becomes the ((n_head + 2·n_kv_head)·hs, C) weight of a grouped-query layer: queries kept, each
    group of n_head // n_kv_head consecutive key (and value) heads replaced by their mean."""
    cases = [(4, 2, 16), (6, 3, 12), (4, 1, 8)]
    if is_hidden():
        r = draw(94)
        nh = r.choice([4, 6, 8, 12])  # the first case has >= 2 groups of >= 2 heads: every mistake shows
        cases = [(nh, r.choice([d for d in range(2, nh // 2 + 1) if nh % d == 0]), nh * r.randint(1, 6))]
        for _ in range(2):
            nh = r.choice([2, 4, 6, 8, 12])
            kv = r.choice([d for d in range(1, nh) if nh % d == 0])
            cases.append((nh, kv, nh * r.randint(1, 6)))
        cases.append((4, 4, 8))  # n_kv_head = n_head: nothing to pool
    for k, (nh, kv, C) in enumerate(cases):
        g = torch.Generator().manual_seed(seeded(95 + k))
        w = torch.randn(3 * C, C, generator=g, dtype=torch.float64)
        ref = _pool(w, nh, kv)
        got = _call(fn, w, nh, kv, what="your conversion")
        try:
            got = torch.as_tensor(got).detach().double()
        except (TypeError, ValueError, RuntimeError):
            fail(f"your conversion should return a tensor, got {type(got).__name__}")
        where = f"(n_head={nh}, n_kv_head={kv}, n_embd={C})"
        if got.shape != ref.shape:
            if got.shape == (2 * kv * (C // nh), C):
                fail(f"you returned the keys and values only: keep the queries first, unchanged {where}")
            if got.shape == (3 * kv * (C // nh), C):
                fail(f"you pooled the query heads too: every query head stays; only keys and values are "
                     f"shared {where}")
            fail(f"return a weight of shape {tuple(ref.shape)} = ((n_head + 2·n_kv_head)·head_size, n_embd), "
                 f"got {tuple(got.shape)} {where}")
        if torch.allclose(got, ref, atol=1e-6):
            continue
        for value, msg in (
            (_pool(w, nh, kv, strided=True), "you grouped heads h, h + n_kv_head, … (strided); a group is "
                                             "n_head // n_kv_head CONSECUTIVE heads: reshape(n_kv_head, group, …)"),
            (_pool(w, nh, kv, how="sum"), "you summed each group's heads; take their mean"),
            (_pool(w, nh, kv, how="first"), "you kept the first head of each group; Ainslie et al. mean-pool "
                                            "all heads of the group"),
            (_pool(w, nh, kv, pool_q=True), "you pooled the query heads too: every query head stays; only keys "
                                            "and values are shared"),
        ):
            if value.shape == got.shape and torch.allclose(got, value, atol=1e-6):
                fail(f"{msg} {where}")
        worst = (got - ref).abs().max().item()
        fail(f"your weight differs from the mean-pooled one {where} (largest difference {worst:.3g})")
    passed("multi-head -> grouped-query: queries kept, each group of consecutive K/V heads mean-pooled")


# --- 09.5 the most key/value heads that fit a cache budget --------------------------------------

def _fits(cfg: GPTConfig, n_kv: int, seq_len: int, batch_size: int, nbytes: int) -> int:
    """Bytes of a real KVCache for cfg with n_kv key/value heads (meta device, nothing allocated)."""
    return _cache_bytes(GPTConfig.from_dict({**cfg.to_dict(), "n_kv_head": n_kv}), seq_len, batch_size, nbytes)


def _kv_heads_ref(cfg: GPTConfig, seq_len: int, batch_size: int, nbytes: int, budget: int) -> int:
    divisors = [d for d in range(1, cfg.n_head + 1) if cfg.n_head % d == 0]
    return max((d for d in divisors if _fits(cfg, d, seq_len, batch_size, nbytes) <= budget), default=0)


@forbids('minigpt.config.GPTConfig.kv_cache_bytes_per_token', 'minigpt.attention.KVCache.__init__',
         'minigpt.attention.KVCache.bytes_per_token', 'minigpt.model.GPT.new_kv_cache')
def check_kv_heads_that_fit(fn: Callable) -> None:
    """Check ``fn(cfg, seq_len, batch_size, bytes_per_element, budget_bytes) -> int``: the largest
    ``n_kv_head`` that divides ``cfg.n_head`` and whose cache for ``batch_size`` sequences of
    ``seq_len`` tokens takes at most ``budget_bytes``; 0 when not even one key/value head fits.
    The reference tries every divisor against the bytes of a real ``KVCache``."""
    gib = 2**30
    llama70 = GPTConfig(vocab_size=32000, block_size=4096, n_layer=80, n_head=64, n_embd=8192)
    cases = [(llama70, 8192, 16, 2, 40 * gib),  # 5 GiB per K/V head: 8 fit (Llama 2 70B's choice); 1 is not the answer
             (GPTConfig(n_layer=32, n_head=32, n_embd=4096), 32768, 8, 2, 24 * gib),
             (GPTConfig(n_layer=12, n_head=12, n_embd=768), 1024, 64, 4, 400 * 2**20),
             (GPTConfig(n_layer=80, n_head=64, n_embd=8192), 131072, 64, 2, 80 * gib)]
    if is_hidden():
        r = draw(95)
        cases = []
        for _ in range(5):
            nh = r.choice([6, 8, 12, 16, 24, 32, 48, 64])
            cfg = GPTConfig(n_layer=r.randint(2, 96), n_head=nh, n_embd=nh * r.choice([64, 96, 128]))
            T, B, nb = r.randint(256, 65536), r.randint(1, 64), r.choice([1, 2, 4])
            one = _fits(cfg, 1, T, B, nb)
            budget = int(one * r.choice([0.5, 1.0, r.uniform(1.0, nh * 1.2), r.uniform(1.5, 5.0)]))
            cases.append((cfg, T, B, nb, budget))
    for cfg, T, B, nb, budget in cases:
        ref = _kv_heads_ref(cfg, T, B, nb, budget)
        got = _as_int(_call(fn, cfg, T, B, nb, budget, what="your kv-heads search"), "your answer")
        if got == ref:
            continue
        one = _fits(cfg, 1, T, B, nb)
        if got > 0 and cfg.n_head % got:
            fail(f"{got} does not divide n_head={cfg.n_head}: each key/value head serves a whole group of query "
                 "heads, so only divisors of n_head are possible; take the largest divisor that fits")
        if got == 1 and ref > 1:
            fail("1 key/value head fits, but more do too: the question is the MOST key/value heads (closest to "
                 "multi-head quality) whose cache still fits")
        if got == 0 and ref > 0:
            fail("you answered 0 (nothing fits), but at least one key/value head fits: compare the cache's bytes "
                 "with the budget using <=")
        if got > 0 and got * one > budget:
            fail(f"with n_kv_head={got} the cache needs more than the budget: did you count one sequence, one "
                 "layer or the keys only? use your kv_cache_bytes from 09.3 with the config's n_kv_head set")
        if ref == 0:
            fail("not even one key/value head fits this budget: return 0")
        fail(f"your answer {got} is not the largest divisor of n_head={cfg.n_head} whose cache fits (n_layer="
             f"{cfg.n_layer}, head_size={cfg.head_size}, seq_len={T}, batch_size={B}, {nb} bytes per number, "
             f"budget {budget:,} bytes)")
    passed("key/value heads that fit: the largest divisor of n_head whose cache fits the budget, as a real cache")
