"""Checkpoints: round trip, tied head, atomic writes, and a clear error for every kind of damage."""

import json
import os

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open

from minigpt import GPT, GPTConfig
from minigpt.checkpoint import (CheckpointError, atomic_write_bytes, atomic_write_text, load_checkpoint,
                                pretrained, read_safetensors, save_checkpoint, save_safetensors_atomic,
                                unwrap_model)

CFG = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16)
FILES = {"model.safetensors", "config.json", "meta.json", "README.md"}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(**CFG)).eval()


@pytest.fixture
def saved(tmp_path, model):
    return save_checkpoint(tmp_path / "ck", model, meta={"step": 7, "val_loss": 1.25})


def edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


def test_round_trip_identical_logits_and_meta(saved, model):
    assert set(os.listdir(saved)) == FILES  # no tokenizer given, no temp files left behind
    ck = load_checkpoint(saved)
    assert ck.config == model.config and ck.path == saved and ck.tokenizer is None
    assert ck.meta["step"] == 7 and ck.meta["val_loss"] == 1.25 and "minigpt_version" in ck.meta
    assert not ck.model.training
    idx = torch.randint(0, 11, (3, 16))
    assert torch.equal(ck.model(idx)[0], model(idx)[0])
    assert "n_embd" in ck.card


def test_tied_head_saved_once_and_retied(saved):
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        names = set(f.keys())
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    ck = load_checkpoint(saved)
    assert ck.model.lm_head.weight is ck.model.transformer.wte.weight
    with torch.no_grad():
        ck.model.transformer.wte.weight[3] += 1.0
    torch.testing.assert_close(ck.model.lm_head.weight[3], ck.model.transformer.wte.weight[3])
    assert ck.model.num_params() == GPT(GPTConfig(**CFG)).num_params()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch._dynamo's import-time warnings
def test_compiled_and_wrapped_models_are_unwrapped(tmp_path, model):
    wrapped = nn.DataParallel(torch.compile(model))  # compile is lazy: nothing is compiled here
    model.cpu()  # with a GPU present, DataParallel moved the model there
    assert unwrap_model(wrapped) is model
    folder = save_checkpoint(tmp_path / "ck", wrapped)
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        assert not any("_orig_mod" in k or k.startswith("module.") for k in f.keys())
    idx = torch.randint(0, 11, (1, 8))
    assert torch.equal(load_checkpoint(folder).model(idx)[0], model(idx)[0])


def test_resave_replaces_files_and_drops_stale_tokenizer(tmp_path, model):
    folder = tmp_path / "ck"
    folder.mkdir()
    (folder / "tokenizer.json").write_text("{}")  # from an earlier save with another tokenizer
    save_checkpoint(folder, model, card="# my card")
    assert set(os.listdir(folder)) == FILES
    assert (folder / "README.md").read_text() == "# my card\n"


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(target.parent) == ["f.txt"]

    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "half")
    assert target.read_text() == "new" and os.listdir(target.parent) == ["f.txt"]


def test_safetensors_helpers_round_trip(tmp_path):
    tensors = {"a": torch.arange(6.0).view(2, 3).t(), "b": torch.ones(2, dtype=torch.bfloat16)}  # a not contiguous
    save_safetensors_atomic(tensors, tmp_path / "opt.safetensors", metadata={"step": "3"})
    back, meta = read_safetensors(tmp_path / "opt.safetensors")
    assert meta["step"] == "3" and back["b"].dtype == torch.bfloat16
    assert torch.equal(back["a"], tensors["a"])


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_truncated_weights_fail_clearly(saved, keep):
    w = saved / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is corrupt or truncated"):
        load_checkpoint(saved)


def test_git_lfs_pointer_is_recognised(saved):
    (saved / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9\n")
    with pytest.raises(CheckpointError, match="git lfs pull"):
        load_checkpoint(saved)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors"])
def test_missing_file_named(saved, missing):
    (saved / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.") + " is missing"):
        load_checkpoint(saved)


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*save_checkpoint"):
        load_checkpoint(tmp_path / "nowhere")


def test_invalid_config_json(saved):
    (saved / "config.json").write_text('{"vocab_size": 11,')
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_checkpoint(saved)
    (saved / "config.json").write_text('{"vocab_size": 11, "n_embd": 15, "n_head": 2}')
    with pytest.raises(CheckpointError, match=r"config\.json is not a valid GPTConfig.*divisible"):
        load_checkpoint(saved)


def test_config_with_other_width_names_tensor_and_shapes(saved):
    edit_config(saved, n_embd=32)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*transformer\.wte\.weight: expected \(11, 32\), found \(11, 16\)"):
        load_checkpoint(saved)


def test_config_with_other_depth_lists_missing_and_unexpected(saved):
    edit_config(saved, n_layer=3)
    with pytest.raises(CheckpointError, match=r"missing 12 tensor\(s\): transformer\.h\.2\."):
        load_checkpoint(saved)
    edit_config(saved, n_layer=1)
    with pytest.raises(CheckpointError, match=r"unexpected 12 tensor\(s\): transformer\.h\.1\."):
        load_checkpoint(saved)


def test_meta_must_be_json(tmp_path, model):
    with pytest.raises(TypeError, match="not JSON serializable"):
        save_checkpoint(tmp_path / "ck", model, meta={"optimizer": object()})


class StandInTokenizer:
    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    def to_dict(self):
        return {"type": "stand-in", "vocab_size": self.vocab_size}


def test_save_refuses_tokenizer_of_other_size(tmp_path, model):
    with pytest.raises(ValueError, match="tokenizer vocab_size 12 != model vocab_size 11"):
        save_checkpoint(tmp_path / "ck", model, StandInTokenizer(12))


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_round_trip_and_vocab_mismatch(tmp_path, kind):
    tok_mod = pytest.importorskip("minigpt.tokenizer")
    text = "to be or not to be, that is the question\n"
    if kind == "char":
        tok, other = tok_mod.CharTokenizer.from_text(text), tok_mod.CharTokenizer.from_text(text + "XYZ")
    else:
        tok, other = tok_mod.BPETokenizer.train(text, 260), tok_mod.BPETokenizer.train(text, 262)
    torch.manual_seed(0)
    m = GPT(GPTConfig(**{**CFG, "vocab_size": tok.vocab_size}))
    folder = save_checkpoint(tmp_path / "ck", m, tok)
    ck = load_checkpoint(folder)
    assert type(ck.tokenizer) is type(tok) and ck.tokenizer.to_dict() == tok.to_dict()
    assert ck.tokenizer.decode(ck.tokenizer.encode(text)) == text
    (folder / "tokenizer.json").write_text(json.dumps(other.to_dict()))
    with pytest.raises(CheckpointError, match=rf"tokenizer\.json has vocab_size {other.vocab_size} "
                                              rf"but config\.json has vocab_size {tok.vocab_size}"):
        load_checkpoint(folder)
    (folder / "tokenizer.json").write_text("not json")
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is not valid JSON"):
        load_checkpoint(folder)
    (folder / "tokenizer.json").write_text('{"type": "wordpiece"}')
    with pytest.raises(CheckpointError, match=r"tokenizer\.json is not a valid minigpt tokenizer.*wordpiece"):
        load_checkpoint(folder)


def test_pretrained_missing_gives_helpful_error(tmp_path, monkeypatch, model):
    monkeypatch.setenv("MINIGPT_ASSETS", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        pretrained()
    msg = str(info.value)
    assert "shakespeare-bpe" in msg and str(tmp_path / "pretrained") in msg
    assert "make pretrained" in msg and "none" in msg
    save_checkpoint(tmp_path / "pretrained" / "tiny", model)
    with pytest.raises(FileNotFoundError, match="Available in .*: tiny"):
        pretrained("shakespeare-bpe")
    ck = pretrained("tiny")
    idx = torch.randint(0, 11, (1, 8))
    assert torch.equal(ck.model(idx)[0], model(idx)[0])
    with pytest.raises(ValueError, match="plain folder name"):
        pretrained("../tiny")
