"""`GPTConfig`: the shape of a GPT, validated when it is made."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ACTIVATIONS = ("gelu", "relu", "relu2", "swiglu")
ATTN_IMPLS = ("sdpa", "explicit")
NORMS = ("layernorm", "rmsnorm")
POS_EMBS = ("learned", "rope")


def swiglu_hidden(n_embd: int, multiple_of: int = 8) -> int:
    """The Llama rule for a SwiGLU width: 2/3 of 4·n_embd (three matrices instead of two, so the
    parameter count stays that of a 4× GELU FFN), rounded up to a multiple of ``multiple_of``."""
    hidden = int(2 * 4 * n_embd / 3)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


@dataclass
class GPTConfig:
    """Hyperparameters of a decoder-only transformer: GPT-2 by default, Llama-style by options.

    Attributes:
        vocab_size: number of token ids the model reads and predicts.
        block_size: the context length, the most tokens the model sees at once.
        n_layer: number of transformer blocks.
        n_head: attention heads per block; ``n_embd`` must be divisible by it.
        n_embd: width of the residual stream (the embedding size).
        dropout: dropout probability in [0, 1) on embeddings, attention and residual branches.
        bias: whether Linear layers and LayerNorms have a bias (GPT-2: True). RMSNorm never has
            one (as in Llama), and the output head never has one.
        activation: the feed-forward network: ``"gelu"`` (GPT-2, tanh approximation),
            ``"relu"``, ``"relu2"`` (squared ReLU, Primer) or ``"swiglu"`` (Llama:
            ``W₂·(SiLU(W_gate x) ⊙ W₁x)``, three matrices).
        attn_impl: ``"sdpa"`` (fast, PyTorch's fused kernel) or ``"explicit"`` (the formula
            written out; the two give the same result).
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama: x / rms(x) · g, no mean, no bias).
        norm_eps: the epsilon inside every norm (GPT-2 and PyTorch's LayerNorm: 1e-5).
        pos_emb: ``"learned"`` (GPT-2: a table P added to the token embedding) or ``"rope"``
            (rotary: q and k of every head are rotated by their absolute position, so q·k
            depends only on the relative position; no table, no ``wpe``).
        rope_theta: the rotary base θ: pair i turns by pos·θ^(-2i/head_size) (Llama 2: 10000).
        ffn_hidden: the FFN's inner width. None: 4·n_embd for gelu/relu/relu2, and for swiglu
            the Llama rule, 2/3·4·n_embd rounded up to a multiple of 8 (:func:`swiglu_hidden`),
            which keeps the parameter count of the 4× two-matrix FFN.
        n_kv_head: key/value heads. None = n_head (multi-head attention); a divisor of n_head
            gives grouped-query attention (query head h uses key/value head h // (n_head //
            n_kv_head)), 1 gives multi-query attention. The KV cache shrinks by n_head / n_kv_head.
        qk_norm: RMSNorm (weight only, over head_size) on each head's queries and keys before
            the rotary embedding, as in Qwen3 and Gemma 3.
        tie_weights: the output head is the token embedding matrix (GPT-2: True); False gives
            ``lm_head`` its own matrix (Llama).
        qkv_bias: bias on the Q/K/V projection only. None follows ``bias``; True with
            ``bias=False`` is Qwen2 (biases on q, k, v and nowhere else).
    """

    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    activation: str = "gelu"
    attn_impl: str = "sdpa"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    pos_emb: str = "learned"
    rope_theta: float = 10000.0
    ffn_hidden: int | None = None
    n_kv_head: int | None = None
    qk_norm: bool = False
    tie_weights: bool = True
    qkv_bias: bool | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"GPTConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive, got {value}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"GPTConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                f"each head gets n_embd // n_head dimensions. Try n_embd={self.n_head * max(1, round(self.n_embd / self.n_head))}."
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise TypeError(f"GPTConfig.dropout must be a float, got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        if not isinstance(self.bias, bool):
            raise TypeError(f"GPTConfig.bias must be True or False, got {self.bias!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(f"GPTConfig.attn_impl must be one of {ATTN_IMPLS}, got {self.attn_impl!r}")
        self._check_modern()

    def _check_modern(self) -> None:
        """Validate the architecture options (normalisation, positions, FFN, heads, head, biases)."""
        if self.norm not in NORMS:
            raise ValueError(f"GPTConfig.norm must be one of {NORMS}, got {self.norm!r}")
        if self.pos_emb not in POS_EMBS:
            raise ValueError(f"GPTConfig.pos_emb must be one of {POS_EMBS}, got {self.pos_emb!r}")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"GPTConfig.{name} must be a float, got {value!r}")
            if not 0.0 < float(value) < float("inf"):
                raise ValueError(f"GPTConfig.{name} must be a positive number, got {value}")
            setattr(self, name, float(value))
        if self.pos_emb == "rope" and self.head_size % 2:
            raise ValueError(f"GPTConfig.pos_emb='rope' needs an even head_size, got n_embd // n_head = "
                             f"{self.head_size}: rotary embedding turns pairs of dimensions; change n_embd or n_head")
        for name in ("ffn_hidden", "n_kv_head"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"GPTConfig.{name} must be an int or None, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"GPTConfig.{name} must be positive (or None for the default), got {value}")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            divisors = [d for d in range(1, self.n_head + 1) if self.n_head % d == 0]
            raise ValueError(f"GPTConfig.n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): "
                             f"each key/value head serves a group of query heads; choose one of {divisors}")
        for name in ("qk_norm", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"GPTConfig.{name} must be True or False, got {getattr(self, name)!r}")
        if self.qkv_bias is not None and not isinstance(self.qkv_bias, bool):
            raise TypeError(f"GPTConfig.qkv_bias must be True, False or None (follow bias), got {self.qkv_bias!r}")

    @property
    def head_size(self) -> int:
        """Dimensions per attention head, d_k = n_embd / n_head."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` when it is None (multi-head attention)."""
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def ffn_width(self) -> int:
        """The FFN's inner width: ``ffn_hidden``, or 4·n_embd (SwiGLU: :func:`swiglu_hidden`)."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return swiglu_hidden(self.n_embd) if self.activation == "swiglu" else 4 * self.n_embd

    @property
    def attn_bias(self) -> bool:
        """Whether the Q/K/V projection has a bias: ``qkv_bias``, or ``bias`` when it is None."""
        return self.bias if self.qkv_bias is None else self.qkv_bias

    def kv_cache_bytes_per_token(self, bytes_per_element: int = 4) -> int:
        """KV-cache memory per token of context: keys and values, every layer, n_kv_head heads."""
        return 2 * self.n_layer * self.kv_heads * self.head_size * bytes_per_element

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GPTConfig":
        """Build a config from a dict, rejecting unknown keys by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**d)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "GPTConfig":
        """Parse a config from a JSON string or a path to a JSON file."""
        p = Path(text_or_path)
        text = p.read_text() if (isinstance(text_or_path, Path) or not str(text_or_path).lstrip().startswith("{")) else str(text_or_path)
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config is not valid JSON: {e}") from e
        if not isinstance(d, dict):
            raise ValueError(f"config JSON must be an object, got {type(d).__name__}")
        return cls.from_dict(d)
