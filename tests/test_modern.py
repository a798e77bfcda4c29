"""Architecture options (chapter 09): RMSNorm, RoPE, SwiGLU / relu2, grouped-query attention,
qk-norm, untied head. Each is checked against an independent reference: the formula in float64,
complex-number rotation, an MHA model with repeated K/V heads, the uncached forward pass, and the
GPT-2 names written out. The default config must stay GPT-2, name for name."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt import GPT, GPTConfig
from minigpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minigpt.config import swiglu_hidden
from minigpt.model import FeedForward
from minigpt.norms import RMSNorm
from minigpt.rope import apply_rope, rope_cos_sin
from minigpt.sampling import generate
from minigpt.train import TrainConfig, configure_optimizer

SMALL = dict(vocab_size=29, block_size=24, n_layer=2, n_head=4, n_embd=32)


def perturbed(config: GPTConfig, seed: int = 0) -> GPT:
    """A model whose weights are far from init (norm gains not 1, biases not 0), in eval mode."""
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


# --------------------------------------------------------------------------- RoPE

def rope_reference(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotation written with complex numbers in float64: pair (x_i, x_{i+d/2}) as x_i + i·x_{i+d/2},
    multiplied by exp(i·m·theta^(-2i/d))."""
    d = x.size(-1)
    x = x.double()
    z = torch.complex(x[..., : d // 2], x[..., d // 2:])
    freqs = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angle = positions.double()[:, None] * freqs[None, :]  # (T, d/2)
    z = z * torch.polar(torch.ones_like(angle), angle)
    return torch.cat([z.real, z.imag], dim=-1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([2, 4, 8, 16]), theta=st.sampled_from([500.0, 10000.0]))
def test_rope_matches_complex_rotation_and_keeps_norms(seed, d, theta):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, 256, (7,), generator=g)  # angles in float32, as Hugging Face: exact enough here
    x = torch.randn(2, 3, 7, d, generator=g)
    cos, sin = rope_cos_sin(positions, d, theta)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y.double(), rope_reference(x, positions, theta), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-4, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(0, 300), n=st.integers(0, 300), shift=st.integers(-200, 300))
def test_rope_dot_product_depends_only_on_relative_position(seed, m, n, shift):
    shift = max(shift, -min(m, n))  # positions stay >= 0
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, generator=g, dtype=torch.float64)

    def dot(a, b):
        cos, sin = rope_cos_sin(torch.tensor([a, b]), 16, 10000.0, dtype=torch.float64)
        return float(apply_rope(q, cos[0], sin[0]) @ apply_rope(k, cos[1], sin[1]))

    assert dot(m + shift, n + shift) == pytest.approx(dot(m, n), abs=2e-4)
    if m != n:  # and it does depend on the relative position (a test that could fail)
        assert dot(m, n) != pytest.approx(float(q @ k), abs=1e-9) or dot(n, m) != pytest.approx(float(q @ k), abs=1e-9)


# --------------------------------------------------------------------------- RMSNorm

def test_rmsnorm_matches_formula_in_float64():
    torch.manual_seed(0)
    norm = RMSNorm(12, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
    x = 3 * torch.randn(4, 5, 12) + 1  # a mean that RMSNorm must *not* subtract
    ref = x.double() / torch.sqrt(x.double().pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight.double()
    torch.testing.assert_close(norm(x).double(), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(norm(x), torch.nn.functional.rms_norm(x, (12,), norm.weight, 1e-6), atol=1e-6, rtol=0)
    xb = x.bfloat16()  # low precision: computed in float32, cast back before the gain (as Llama's)
    want = norm.weight.bfloat16() * (xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6)).bfloat16()
    got = RMSNorm(12, eps=1e-6).bfloat16()
    got.load_state_dict(norm.state_dict())
    assert got(xb).dtype == torch.bfloat16 and torch.equal(got(xb), want)
    assert not torch.allclose(norm(x), torch.nn.functional.layer_norm(x, (12,), norm.weight, None, 1e-6), atol=1e-3)


def test_rmsnorm_model_has_no_norm_biases_or_means():
    model = GPT(GPTConfig(**SMALL, norm="rmsnorm", norm_eps=1e-6))
    for name in ("transformer.h.0.ln_1", "transformer.h.1.ln_2", "transformer.ln_f"):
        mod = model.get_submodule(name)
        assert isinstance(mod, RMSNorm) and mod.eps == 1e-6 and not hasattr(mod, "bias")


# --------------------------------------------------------------------------- FFN variants

def test_swiglu_and_relu2_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32)
    ffn = FeedForward(GPTConfig(**SMALL, activation="swiglu", ffn_hidden=40)).eval()
    assert ffn.c_fc.weight.shape == ffn.c_gate.weight.shape == (40, 32) and ffn.c_proj.weight.shape == (32, 40)
    gate = x @ ffn.c_gate.weight.T + ffn.c_gate.bias
    up = x @ ffn.c_fc.weight.T + ffn.c_fc.bias
    want = (gate * torch.sigmoid(gate) * up) @ ffn.c_proj.weight.T + ffn.c_proj.bias
    torch.testing.assert_close(ffn(x), want, atol=1e-6, rtol=1e-5)
    ffn = FeedForward(GPTConfig(**SMALL, activation="relu2", bias=False)).eval()
    h = torch.clamp(x @ ffn.c_fc.weight.T, min=0) ** 2
    torch.testing.assert_close(ffn(x), h @ ffn.c_proj.weight.T, atol=1e-6, rtol=1e-5)
    assert ffn.c_fc.weight.shape == (128, 32)


def test_swiglu_default_width_is_the_llama_rule():
    assert swiglu_hidden(48) == 128 and swiglu_hidden(32) == 88 and swiglu_hidden(4096) == 10928
    assert GPTConfig(**SMALL, activation="swiglu").ffn_width == 88
    assert GPTConfig(**SMALL, activation="gelu").ffn_width == 128
    assert GPTConfig(**SMALL, activation="swiglu", ffn_hidden=100).ffn_width == 100
    # three matrices of 2/3 the width: the FFN has about the parameters of GPT-2's 4x FFN
    n = lambda act: sum(p.numel() for p in FeedForward(GPTConfig(**SMALL, activation=act, bias=False)).parameters())  # noqa: E731
    assert abs(n("swiglu") / n("gelu") - 1) < 0.05


# --------------------------------------------------------------------------- grouped-query attention

@pytest.mark.parametrize("n_kv_head", [1, 2])
@pytest.mark.parametrize("attn_impl", ["sdpa", "explicit"])
@pytest.mark.parametrize("pos_emb", ["learned", "rope"])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_head, attn_impl, pos_emb):
    cfg = GPTConfig(**{**SMALL, "n_head": 4}, n_kv_head=n_kv_head, attn_impl=attn_impl, pos_emb=pos_emb, qk_norm=True)
    gqa = perturbed(cfg)
    mha = GPT(GPTConfig(**{**cfg.to_dict(), "n_kv_head": None})).eval()
    hs, C, group = cfg.head_size, cfg.n_embd, cfg.n_head // n_kv_head
    sd = dict(gqa.state_dict())
    for i in range(cfg.n_layer):
        for kind in ("weight", "bias"):
            w = sd[f"transformer.h.{i}.attn.c_attn.{kind}"]
            q, k, v = w.split([C, n_kv_head * hs, n_kv_head * hs], 0)
            rep = lambda t: t.reshape(n_kv_head, hs, *t.shape[1:]).repeat_interleave(group, 0).reshape(C, *t.shape[1:])  # noqa: E731
            sd[f"transformer.h.{i}.attn.c_attn.{kind}"] = torch.cat([q, rep(k), rep(v)], 0)
    mha.load_state_dict(sd)
    idx = torch.randint(0, cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, _, w_got = gqa(idx, return_attn=True)
        want, _, w_want = mha(idx, return_attn=True)
        torch.testing.assert_close(gqa(idx)[0], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(w_got[1], w_want[1], atol=1e-6, rtol=0)
    assert gqa.transformer.h[0].attn.c_attn.weight.shape == ((4 + 2 * n_kv_head) * hs, C)


def test_kv_cache_stores_only_kv_heads_and_reports_bytes_per_token():
    cfg = GPTConfig(**{**SMALL, "n_head": 4}, n_kv_head=1, pos_emb="rope")
    cache = GPT(cfg).new_kv_cache(3)
    assert cache.k[0].shape == (3, 1, cfg.block_size, cfg.head_size)
    assert cache.bytes_per_token == 2 * 2 * 1 * 8 * 4 == cfg.kv_cache_bytes_per_token()
    total = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
    assert cache.bytes_per_token == total // (3 * cfg.block_size)
    mha = GPTConfig(**SMALL)
    assert mha.kv_cache_bytes_per_token(2) == 4 * cfg.kv_cache_bytes_per_token(2)  # 4 heads vs 1


# --------------------------------------------------------------------------- cached == uncached

GRID = [
    dict(),  # GPT-2
    dict(norm="rmsnorm"),
    dict(norm="rmsnorm", pos_emb="rope"),
    dict(norm="rmsnorm", pos_emb="rope", activation="swiglu"),
    dict(norm="rmsnorm", pos_emb="rope", activation="swiglu", n_kv_head=2),
    dict(norm="rmsnorm", pos_emb="rope", activation="swiglu", n_kv_head=1, tie_weights=False, qk_norm=True,
         bias=False, rope_theta=500.0),
    dict(pos_emb="rope", activation="relu2", n_kv_head=2, attn_impl="explicit"),
    dict(norm="rmsnorm", pos_emb="rope", activation="swiglu", n_kv_head=2, bias=False, qkv_bias=True),
    dict(activation="relu", qk_norm=True, tie_weights=False, ffn_hidden=24),
]


@pytest.mark.parametrize("options", GRID, ids=lambda o: "+".join(f"{k}={v}" for k, v in o.items()) or "gpt2")
def test_cached_equals_uncached_for_every_option(options):
    cfg = GPTConfig(**SMALL, **options)
    model = perturbed(cfg)
    idx = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(idx)[0]
        cache = model.new_kv_cache(2)
        steps = [model(idx[:, :7], kv_cache=cache)[0]]  # prefill 7, then 3, then one at a time
        steps.append(model(idx[:, 7:10], kv_cache=cache)[0])
        steps += [model(idx[:, t:t + 1], kv_cache=cache)[0] for t in range(10, cfg.block_size)]
    assert cache.pos == cfg.block_size
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    prompt = idx[:1, :5]
    n_new = cfg.block_size + 6  # past the context: the cache is dropped and the window slides
    # greedy; the repetition penalty keeps random weights from repeating one token forever
    cached = generate(model, prompt, n_new, do_sample=False, repetition_penalty=1.5, use_cache=True)
    uncached = generate(model, prompt, n_new, do_sample=False, repetition_penalty=1.5, use_cache=False)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, 5:].tolist())) > 3  # a varied continuation
    sampled = [generate(model, prompt, n_new, seed=3, use_cache=c) for c in (True, False)]
    assert torch.equal(*sampled)


@pytest.mark.parametrize("options", [GRID[5], GRID[7]])
def test_causality_with_rotary_and_gqa(options):
    model = perturbed(GPTConfig(**SMALL, **options))
    a = torch.randint(0, 29, (1, 16), generator=torch.Generator().manual_seed(4))
    b = a.clone()
    b[0, 9:] = (b[0, 9:] + 1) % 29
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :9], lb[:, :9], atol=1e-6, rtol=0)
    assert not torch.allclose(la[:, 9:], lb[:, 9:], atol=1e-3)


# --------------------------------------------------------------------------- config validation

@pytest.mark.parametrize("kwargs, message", [
    ({"norm": "batchnorm"}, r"GPTConfig\.norm must be one of \('layernorm', 'rmsnorm'\)"),
    ({"norm_eps": 0.0}, r"GPTConfig\.norm_eps must be a positive number"),
    ({"norm_eps": "1e-5"}, r"GPTConfig\.norm_eps must be a float"),
    ({"pos_emb": "alibi"}, r"GPTConfig\.pos_emb must be one of \('learned', 'rope'\)"),
    ({"rope_theta": -1.0}, r"GPTConfig\.rope_theta must be a positive number"),
    ({"pos_emb": "rope", "n_embd": 36, "n_head": 4}, r"GPTConfig\.pos_emb='rope' needs an even head_size.*9"),
    ({"activation": "geglu"}, r"GPTConfig\.activation must be one of \('gelu', 'relu', 'relu2', 'swiglu'\)"),
    ({"ffn_hidden": 0}, r"GPTConfig\.ffn_hidden must be positive"),
    ({"ffn_hidden": 64.0}, r"GPTConfig\.ffn_hidden must be an int or None"),
    ({"n_kv_head": 3}, r"GPTConfig\.n_kv_head \(3\) must divide n_head \(4\).*\[1, 2, 4\]"),
    ({"n_kv_head": 0}, r"GPTConfig\.n_kv_head must be positive"),
    ({"qk_norm": 1}, r"GPTConfig\.qk_norm must be True or False"),
    ({"tie_weights": "no"}, r"GPTConfig\.tie_weights must be True or False"),
    ({"qkv_bias": "yes"}, r"GPTConfig\.qkv_bias must be True, False or None"),
])
def test_invalid_options_name_the_field_and_the_fix(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as err:
        GPTConfig(**{**SMALL, **kwargs})
    assert "\n" not in str(err.value)


def test_defaults_are_gpt2():
    cfg = GPTConfig()
    assert (cfg.norm, cfg.pos_emb, cfg.activation, cfg.n_kv_head, cfg.qk_norm, cfg.tie_weights) == \
        ("layernorm", "learned", "gelu", None, False, True)
    assert (cfg.norm_eps, cfg.rope_theta, cfg.ffn_width, cfg.kv_heads, cfg.attn_bias) == (1e-5, 10000.0, 512, 4, True)


# --------------------------------------------------------------------------- names, old configs, checkpoints

def gpt2_names(n_layer: int) -> list[str]:
    """GPT-2's parameter names (Hugging Face GPT2LMHeadModel, ``transformer.`` prefix), written out."""
    names = ["transformer.wte.weight", "transformer.wpe.weight"]
    for i in range(n_layer):
        names += [f"transformer.h.{i}.{n}" for n in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
            "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
            "mlp.c_proj.weight", "mlp.c_proj.bias")]
    return names + ["transformer.ln_f.weight", "transformer.ln_f.bias", "lm_head.weight"]


def test_default_state_dict_names_are_gpt2s():
    model = GPT(GPTConfig(**SMALL))
    assert list(model.state_dict()) == gpt2_names(2)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.h[0].attn.c_attn.weight.shape == (96, 32)


def test_modern_names():
    model = GPT(GPTConfig(**SMALL, **GRID[5]))
    names = set(model.state_dict())
    assert "transformer.wpe.weight" not in names and "lm_head.weight" in names
    assert model.lm_head.weight is not model.transformer.wte.weight
    assert {"transformer.h.0.attn.q_norm.weight", "transformer.h.0.attn.k_norm.weight",
            "transformer.h.0.mlp.c_gate.weight"} <= names
    assert not any(n.endswith(".bias") for n in names)


def test_old_config_json_without_new_keys_loads(tmp_path):
    old = {"vocab_size": 29, "block_size": 24, "n_layer": 2, "n_head": 4, "n_embd": 32, "dropout": 0.0,
           "bias": True, "activation": "gelu", "attn_impl": "sdpa"}  # the keys of every pre-chapter-09 config
    assert GPTConfig.from_dict(old) == GPTConfig(**SMALL)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL)).eval()
    save_checkpoint(tmp_path / "ck", model)
    (tmp_path / "ck" / "config.json").write_text(json.dumps(old))
    loaded = load_checkpoint(tmp_path / "ck").model
    idx = torch.randint(0, 29, (1, 10))
    assert torch.equal(loaded(idx)[0], model(idx)[0])


@pytest.mark.parametrize("options", [GRID[5], GRID[7]])
def test_checkpoint_round_trip_of_modern_models(tmp_path, options):
    model = perturbed(GPTConfig(**SMALL, **options))
    save_checkpoint(tmp_path / "ck", model)
    ck = load_checkpoint(tmp_path / "ck")
    assert ck.config == model.config
    idx = torch.randint(0, 29, (2, 12))
    assert torch.equal(ck.model(idx)[0], model(idx)[0])
    assert (ck.model.lm_head.weight is ck.model.transformer.wte.weight) == model.config.tie_weights


def test_untied_checkpoint_without_head_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", GPT(GPTConfig(**SMALL)))  # tied: no lm_head.weight stored
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    (tmp_path / "ck" / "config.json").write_text(json.dumps({**cfg, "tie_weights": False}))
    with pytest.raises(CheckpointError, match="tie_weights=false: the output head is missing"):
        load_checkpoint(tmp_path / "ck")


# --------------------------------------------------------------------------- init and optimizer

def test_new_matrices_get_gpt2_init():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=16, n_layer=4, n_head=4, n_embd=128, activation="swiglu",
                    tie_weights=False, qk_norm=True, norm="rmsnorm", pos_emb="rope", n_kv_head=2)
    model = GPT(cfg)
    h = model.transformer.h[1]
    for w, std in ((h.mlp.c_gate.weight, 0.02), (h.mlp.c_fc.weight, 0.02), (model.lm_head.weight, 0.02),
                   (h.attn.c_attn.weight, 0.02), (h.mlp.c_proj.weight, 0.02 / math.sqrt(8))):
        assert w.std().item() == pytest.approx(std, rel=0.05) and abs(w.mean().item()) < 3e-3
    assert torch.equal(h.attn.q_norm.weight, torch.ones(32)) and torch.equal(h.ln_1.weight, torch.ones(128))


def test_optimizer_decays_matrices_only_with_untied_head():
    model = GPT(GPTConfig(**SMALL, **GRID[5]))  # untied head, qk-norm, RMSNorm, no biases
    opt = configure_optimizer(model, TrainConfig(), torch.device("cpu"))
    decay, no_decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    names = dict(model.named_parameters())
    want_decay = {n for n, p in names.items() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight",
                                                             "c_gate.weight", "wte.weight", "lm_head.weight"))}
    assert {n for n, p in names.items() if id(p) in decay} == want_decay
    assert {n for n, p in names.items() if id(p) in no_decay} == set(names) - want_decay
    assert "lm_head.weight" in want_decay and "transformer.h.0.attn.q_norm.weight" in names
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_num_params_and_flops_with_untied_head():
    tied, untied = GPT(GPTConfig(**SMALL, pos_emb="rope")), GPT(GPTConfig(**SMALL, pos_emb="rope", tie_weights=False))
    assert untied.num_params() - tied.num_params() == 29 * 32
    assert untied.num_params(exclude_embeddings=True) == tied.num_params(exclude_embeddings=True) + 29 * 32
    assert untied.flops_per_token() == tied.flops_per_token()  # the head's matmul is counted once either way


def test_viz_block_qkv_gives_the_rotated_queries_and_keys_attention_used():
    from minigpt.viz.stages import block_qkv, stages_from_qk

    model = perturbed(GPTConfig(**SMALL, **GRID[5]))  # rotary, multi-query, qk-norm
    idx = torch.randint(0, 29, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        weights = model(idx, return_attn=True)[2][1]  # (1, n_head, T, T)
    q, k, v = block_qkv(model, idx, layer=1)
    assert q.shape == k.shape == v.shape == (1, 4, 12, 8)
    for head in range(4):
        torch.testing.assert_close(stages_from_qk(q[0, head], k[0, head]).weights, weights[0, head], atol=1e-5, rtol=0)
