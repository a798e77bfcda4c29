"""The bundled reference model loads, matches its model card, and samples reproducibly."""

import json
import re
from pathlib import Path

import pytest
import torch

from minigpt import generate_text, pretrained, shakespeare
from minigpt.data import encode_corpus
from minigpt.train import evaluate

ROOT = Path(__file__).resolve().parents[1] / "assets" / "pretrained" / "shakespeare-bpe"


@pytest.fixture(scope="module")
def ck():
    return pretrained()


def test_loads_in_one_line_and_is_small(ck):
    assert ck.config.vocab_size == ck.tokenizer.vocab_size == 2048
    assert not ck.model.training
    size = sum(p.stat().st_size for p in ROOT.iterdir())
    assert size < 25e6, f"reference model folder is {size / 1e6:.1f} MB"


def test_trained_by_the_committed_config(ck):
    """The shipped weights come from `python -m minigpt train --config assets/pretrained/shakespeare-bpe.json`:
    every option of that config is the one recorded in the checkpoint's args.json."""
    config = json.loads((ROOT.parent / "shakespeare-bpe.json").read_text())
    args = json.loads((ROOT / "args.json").read_text())
    assert {k: args[k] for k in config} == config
    assert all(getattr(ck.config, k) == v for k, v in config.items() if hasattr(ck.config, k))


def test_val_loss_on_fixed_slice_matches_card(ck):
    card = (ROOT / "README.md").read_text()
    m = re.search(r"first 8,192 val tokens \| ([0-9.]+) nats/token", card)
    assert m, "the model card must state the fixed-slice val loss"
    stated = float(m.group(1))
    assert json.loads((ROOT / "meta.json").read_text())["eval"]["val_loss_first_8192_tokens"] == stated
    val = encode_corpus(shakespeare("val"), ck.tokenizer)[:8192]
    torch.set_num_threads(2)
    loss = evaluate(ck.model, val, ck.config.block_size, 32)
    assert abs(loss - stated) < 0.02, (loss, stated)
    assert loss < 4.0  # far below the uniform guess ln 2048 = 7.62


def test_seeded_sampling_is_reproducible(ck):
    a = generate_text(ck.model, ck.tokenizer, "ROMEO:\n", max_new_tokens=20, temperature=0.8, top_k=50, seed=7)
    b = generate_text(ck.model, ck.tokenizer, "ROMEO:\n", max_new_tokens=20, temperature=0.8, top_k=50, seed=7)
    c = generate_text(ck.model, ck.tokenizer, "ROMEO:\n", max_new_tokens=20, temperature=0.8, top_k=50, seed=8)
    assert a == b and a != c


def test_card_samples_reproduce(ck):
    samples = json.loads((Path(__file__).resolve().parents[1] / "benchmarks/results/reference_model.json").read_text())["samples"]
    s = samples[0]
    out = generate_text(ck.model, ck.tokenizer, s["prompt"], max_new_tokens=s["max_new_tokens"],
                        temperature=s["temperature"], top_k=s["top_k"], seed=s["seed"])[0]
    assert out == s["text"]
