"""Hugging Face GPT-2 with the same weights gives the same logits and the same greedy tokens.

Nothing is downloaded: the reference is a randomly initialised ``GPT2LMHeadModel``.
"""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from minigpt.checkpoint import CheckpointError, config_from_hf, from_hf_gpt2  # noqa: E402
from minigpt.sampling import generate  # noqa: E402


def hf_config(**kw):
    base = dict(n_layer=2, n_head=2, n_embd=32, n_positions=32, vocab_size=50, resid_pdrop=0.0,
                embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return transformers.GPT2Config(**{**base, **kw})


@pytest.fixture(scope="module")
def hf_model():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(hf_config()).eval()
    with torch.no_grad():  # HF's init is nearly uniform, with biases 0 and LayerNorms 1: perturb all
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def ours(hf_model):
    return from_hf_gpt2(hf_model)


def test_config_mapping(hf_model):
    cfg = config_from_hf(hf_model.config)
    assert (cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.vocab_size) == (32, 32, 2, 2, 50)
    assert cfg.dropout == 0.0 and cfg.activation == "gelu"
    assert config_from_hf(hf_model.config.to_dict()) == cfg
    with pytest.raises(ValueError, match="activation_function='relu' is not supported.*tanh"):
        config_from_hf(hf_config(activation_function="relu"))
    with pytest.raises(ValueError, match="n_inner=64 is not supported"):
        config_from_hf(hf_config(n_inner=64))


def test_logits_match(hf_model, ours):
    idx = torch.randint(0, 50, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf_model(idx).logits
    got = ours(idx)[0]
    assert want.abs().max() > 0.1  # not a trivially small comparison
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert ours.lm_head.weight is ours.transformer.wte.weight


def test_greedy_generation_matches(hf_model, ours):
    prompt = torch.tensor([[3, 14, 15, 9, 26]])
    with torch.no_grad():
        try:
            want = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                     max_new_tokens=20, num_beams=1)
        except Exception:  # some transformers versions want a generation config download
            want = prompt
            for _ in range(20):
                want = torch.cat([want, hf_model(want).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert want.shape == (1, 25)
    assert len(set(want[0, 5:].tolist())) > 3  # a varied continuation, not one repeated token
    for use_cache in (True, False):
        assert torch.equal(generate(ours, prompt, 20, do_sample=False, use_cache=use_cache), want)


def test_state_dict_import_without_prefix_and_with_mask_buffers(hf_model, ours):
    sd = {k.removeprefix("transformer."): v for k, v in hf_model.state_dict().items()}
    sd["h.0.attn.bias"] = torch.ones(1, 1, 32, 32, dtype=torch.bool)  # old transformers' mask buffer
    sd["h.0.attn.masked_bias"] = torch.tensor(-1e4)
    model = from_hf_gpt2(sd, config_from_hf(hf_model.config))
    idx = torch.randint(0, 50, (1, 10))
    torch.testing.assert_close(model(idx)[0], ours(idx)[0], atol=0, rtol=0)


def test_import_errors_are_clear(hf_model):
    cfg = config_from_hf(hf_model.config)
    sd = dict(hf_model.state_dict())
    with pytest.raises(ValueError, match="needs config"):
        from_hf_gpt2(sd)
    broken = {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.c_fc.weight"}
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): transformer\.h\.1\.mlp\.c_fc\.weight"):
        from_hf_gpt2(broken, cfg)
    extra = {**sd, "transformer.h.0.attn.rotary.inv_freq": torch.ones(4)}
    with pytest.raises(CheckpointError, match=r"unexpected 1 tensor\(s\): transformer\.h\.0\.attn\.rotary"):
        from_hf_gpt2(extra, cfg)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*transformer\.wpe\.weight"):
        from_hf_gpt2(sd, config_from_hf(hf_config(n_positions=64)))
    untied = {**sd, "lm_head.weight": sd["lm_head.weight"] + 1}
    with pytest.raises(ValueError, match="untied"):
        from_hf_gpt2(untied, cfg)
