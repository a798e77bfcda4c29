"""Importing Hugging Face Llama-family weights (Llama, Qwen2, Qwen3) into a minigpt :class:`GPT`.

The same :class:`~minigpt.model.GPT` holds them, with options set by :func:`config_from_hf_llama`:
RMSNorm, rotary positions, SwiGLU, grouped-query attention, an untied head, Qwen2's q/k/v
biases, Qwen3's qk-norm. Names map one to one, except that q_proj, k_proj and v_proj are
concatenated into the fused ``c_attn`` (rows: queries, then keys, then values); nothing is
permuted, because minigpt's RoPE uses Hugging Face's rotate-half layout. Variants the options
cannot reproduce (RoPE scaling, sliding windows, other activations, …) fail with a one-line error.

GPT-2 weights are imported by :func:`minigpt.checkpoint.from_hf_gpt2`.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn

from .checkpoint import TIED_HEAD, _check_tensors, _hf_get
from .config import GPTConfig
from .model import GPT

MODEL_TYPES = ("llama", "qwen2", "qwen3")

# Hugging Face name (inside model.layers.i.) -> minigpt name (inside transformer.h.i.)
_LAYER_NAMES = {
    "input_layernorm.weight": "ln_1.weight",
    "post_attention_layernorm.weight": "ln_2.weight",
    "self_attn.o_proj.weight": "attn.c_proj.weight",
    "self_attn.o_proj.bias": "attn.c_proj.bias",
    "self_attn.q_norm.weight": "attn.q_norm.weight",
    "self_attn.k_norm.weight": "attn.k_norm.weight",
    "mlp.gate_proj.weight": "mlp.c_gate.weight",
    "mlp.gate_proj.bias": "mlp.c_gate.bias",
    "mlp.up_proj.weight": "mlp.c_fc.weight",
    "mlp.up_proj.bias": "mlp.c_fc.bias",
    "mlp.down_proj.weight": "mlp.c_proj.weight",
    "mlp.down_proj.bias": "mlp.c_proj.bias",
}
_TOP_NAMES = {"model.embed_tokens.weight": "transformer.wte.weight", "model.norm.weight": "transformer.ln_f.weight",
              TIED_HEAD: TIED_HEAD}


def _rope_theta(hf_config: Any) -> float:
    """The rotary base, from ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling``
    (earlier versions); RoPE scaling of any kind is refused."""
    params = _hf_get(hf_config, "rope_parameters")
    scaling = _hf_get(hf_config, "rope_scaling")
    for p in (params, scaling):
        if isinstance(p, Mapping):
            kind = p.get("rope_type", p.get("type", "default"))
            if kind not in (None, "default"):
                raise ValueError(f"rope_type={kind!r} (RoPE scaling) is not supported: minigpt's rotary "
                                 "embedding is the plain one (rope_type 'default')")
            if p.get("partial_rotary_factor", 1.0) != 1.0:
                raise ValueError(f"partial_rotary_factor={p['partial_rotary_factor']} is not supported: "
                                 "minigpt rotates every dimension of a head")
    if isinstance(params, Mapping) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    theta = _hf_get(hf_config, "rope_theta")
    return 10000.0 if theta is None else float(theta)


def config_from_hf_llama(hf_config: Any) -> GPTConfig:
    """A :class:`GPTConfig` for a Hugging Face ``LlamaConfig``, ``Qwen2Config`` or ``Qwen3Config``
    (or its ``to_dict()``), dropout 0.

    Raises a one-line ValueError naming the setting for what the options cannot express.
    """
    model_type = _hf_get(hf_config, "model_type", "llama")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type={model_type!r} is not supported: config_from_hf_llama reads {MODEL_TYPES} "
                         "(GPT-2: use minigpt.checkpoint.config_from_hf)")
    hidden, n_head = _hf_get(hf_config, "hidden_size"), _hf_get(hf_config, "num_attention_heads")
    n_kv = _hf_get(hf_config, "num_key_value_heads") or n_head
    act = _hf_get(hf_config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act={act!r} is not supported: minigpt's gated FFN is SwiGLU (hidden_act 'silu')")
    head_dim = _hf_get(hf_config, "head_dim")
    if head_dim is not None and head_dim * n_head != hidden:
        raise ValueError(f"head_dim={head_dim} is not supported: minigpt's heads have hidden_size // "
                         f"num_attention_heads = {hidden // n_head} dimensions (set head_dim={hidden // n_head})")
    if _hf_get(hf_config, "use_sliding_window", False) or \
            (model_type != "qwen2" and model_type != "qwen3" and _hf_get(hf_config, "sliding_window") is not None) or \
            any(t != "full_attention" for t in (_hf_get(hf_config, "layer_types") or [])):
        raise ValueError("sliding-window attention (use_sliding_window / sliding_window / layer_types) is not "
                         "supported: minigpt attends to the whole context")
    if model_type == "qwen2":  # q, k, v always have biases, o_proj and the MLP never
        bias, qkv_bias = False, True
    else:
        attn_bias, mlp_bias = bool(_hf_get(hf_config, "attention_bias", False)), bool(_hf_get(hf_config, "mlp_bias", False))
        if model_type == "qwen3" and attn_bias:
            raise ValueError("attention_bias=True is not supported for Qwen3: minigpt's bias option would also "
                             "give the MLP biases, which Qwen3 does not have")
        if attn_bias != mlp_bias:
            raise ValueError(f"attention_bias={attn_bias} with mlp_bias={mlp_bias} is not supported: minigpt's "
                             "bias option puts biases on all Linear layers or none (only q/k/v may differ)")
        bias, qkv_bias = attn_bias, None
    return GPTConfig(
        vocab_size=_hf_get(hf_config, "vocab_size"), block_size=_hf_get(hf_config, "max_position_embeddings"),
        n_layer=_hf_get(hf_config, "num_hidden_layers"), n_head=n_head, n_embd=hidden, dropout=0.0,
        bias=bias, qkv_bias=qkv_bias, activation="swiglu", ffn_hidden=_hf_get(hf_config, "intermediate_size"),
        norm="rmsnorm", norm_eps=float(_hf_get(hf_config, "rms_norm_eps", 1e-6)), pos_emb="rope",
        rope_theta=_rope_theta(hf_config), n_kv_head=None if n_kv == n_head else n_kv,
        qk_norm=model_type == "qwen3", tie_weights=bool(_hf_get(hf_config, "tie_word_embeddings", False)))


def _llama_name(key: str) -> str | None:
    """The minigpt name of one Hugging Face tensor; None for q/k/v (fused separately) and
    rotary buffers; the key unchanged when it is unknown (reported as unexpected)."""
    if key in _TOP_NAMES:
        return _TOP_NAMES[key]
    if key.startswith("model.layers."):
        i, rest = key[len("model.layers."):].split(".", 1)
        if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
            return None
        if rest == "self_attn.rotary_emb.inv_freq":  # a buffer in older transformers, recomputed here
            return None
        if rest in _LAYER_NAMES:
            return f"transformer.h.{i}.{_LAYER_NAMES[rest]}"
    if key == "model.rotary_emb.inv_freq":
        return None
    return key


def from_hf_llama(model_or_state_dict: Any, config: GPTConfig | None = None) -> GPT:
    """Build a minigpt :class:`GPT` from Hugging Face Llama / Qwen2 / Qwen3 weights; in eval mode.

    Accepts a ``transformers`` ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM``
    (its config is read with :func:`config_from_hf_llama`) or its state dict (then ``config``
    is required: the number of heads is not visible in the weights); keys with or without the
    ``model.`` prefix are accepted. q_proj, k_proj and v_proj
    are concatenated into ``c_attn``; any missing, unexpected or misshapen tensor is an error.
    """
    if isinstance(model_or_state_dict, nn.Module):
        hf = model_or_state_dict
        if config is None:
            if not hasattr(hf, "config"):
                raise TypeError("from_hf_llama needs a transformers Llama-family model (with .config) or a state dict + config")
            config = config_from_hf_llama(hf.config)
        sd = hf.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        sd = model_or_state_dict
        if config is None:
            raise ValueError("from_hf_llama(state_dict) needs config=GPTConfig(...) (or use "
                             "config_from_hf_llama(hf_config)): the number of heads cannot be read from the weights")
    else:
        raise TypeError(f"from_hf_llama needs a Llama-family model or a state dict, got {type(model_or_state_dict).__name__}")

    # keys of a bare LlamaModel lack the "model." prefix of the ...ForCausalLM that wraps it
    sd = {k if k.startswith("model.") or k == TIED_HEAD else "model." + k: v for k, v in sd.items()}
    tensors: dict[str, torch.Tensor] = {}
    for key, t in sd.items():
        name = _llama_name(key)
        if name is not None:
            tensors[name] = t.detach()
    for i in range(config.n_layer):  # fuse q, k, v (rows in that order) into c_attn
        for kind in ("weight", "bias"):
            parts = [sd.get(f"model.layers.{i}.self_attn.{p}_proj.{kind}") for p in "qkv"]
            if all(p is not None for p in parts):
                tensors[f"transformer.h.{i}.attn.c_attn.{kind}"] = torch.cat([p.detach() for p in parts], 0)
            elif any(p is not None for p in parts):
                missing = [f"{p}_proj.{kind}" for p, t in zip("qkv", parts) if t is None]
                raise ValueError(f"layer {i} has only some of q_proj/k_proj/v_proj.{kind}: {missing} missing")
    head = tensors.get(TIED_HEAD)
    if config.tie_weights and head is not None:
        wte = tensors.get("transformer.wte.weight")
        if wte is not None and head.shape == wte.shape and not torch.equal(head, wte):
            raise ValueError("lm_head.weight differs from model.embed_tokens.weight but config.tie_weights=True: "
                             "use tie_weights=False (tie_word_embeddings=False)")
        del tensors[TIED_HEAD]
    config = GPTConfig.from_dict({**config.to_dict(), "dropout": 0.0}) if config.dropout else config
    model = GPT(config)
    expected = {k: v for k, v in model.state_dict().items() if not (config.tie_weights and k == TIED_HEAD)}
    _check_tensors(tensors, expected, "Hugging Face Llama-family state dict",
                   "Is it a LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM state dict, and does config match "
                   "it (vocab_size, n_layer, n_embd, n_kv_head, ffn_hidden, bias, qk_norm, tie_weights)?")
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if name in expected:
                p.copy_(tensors[name])
    return model.eval()
