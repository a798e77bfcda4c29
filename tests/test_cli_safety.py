"""No run is lost and every bad input ends with one line: the CLI's safety nets (issue 15)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import CheckpointError, load_checkpoint, read_safetensors, save_checkpoint
from minigpt.cli import main
from minigpt.config import GPTConfig
from minigpt.data import encode_corpus
from minigpt.tokenizer import CharTokenizer
from minigpt.train import TrainConfig, build_model, train

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 60
TINY = ["--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def run(argv, capsys):
    """(exit status, stdout, stderr) of ``python -m minigpt ARGV``, in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(code, err, *words):
    assert code == 2 and err.startswith("minigpt: error: ") and err.count("\n") == 1, (code, err)
    for w in words:
        assert w in err, (w, err)


def train_tiny(corpus, out, capsys, *extra, iters=4):
    code, stdout, err = run(["train", "--corpus", corpus, *TINY, "--max-iters", iters, "--eval-interval", 2,
                             "--eval-batches", 1, "--out", out, *extra], capsys)
    assert code == 0, err
    return stdout


@pytest.fixture
def trained(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    train_tiny(corpus, out, capsys)
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# --------------------------------------------------------------------------- runs are never lost

def test_out_that_holds_a_run_is_refused(corpus, trained, capsys):
    before = files(trained)
    code, _, err = run(["train", "--corpus", corpus, *TINY, "--max-iters", 2, "--out", trained], capsys)
    one_line_error(code, err, str(trained), "--resume", "--overwrite")
    assert files(trained) == before
    code, _, err = run(["train", "--out", trained, "--resume", "--overwrite"], capsys)
    one_line_error(code, err, "--resume", "--overwrite")
    assert files(trained) == before


def test_overwrite_replaces_the_run(corpus, trained, capsys):
    (trained / "notes.txt").write_text("mine")  # not a run file: --overwrite leaves it alone
    train_tiny(corpus, trained, capsys, "--overwrite", "--n-embd", "32", iters=2)
    assert json.loads((trained / "train_state.json").read_text())["step"] == 2
    assert json.loads((trained / "config.json").read_text())["n_embd"] == 32
    assert [json.loads(line)["iter"] for line in (trained / "metrics.jsonl").read_text().splitlines()] == [0, 2]
    assert (trained / "notes.txt").read_text() == "mine"
    assert "overwrite" not in json.loads((trained / "args.json").read_text())


def test_out_naming_a_file(corpus, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("keep me")
    code, _, err = run(["train", "--corpus", corpus, *TINY, "--out", f], capsys)
    one_line_error(code, err, str(f), "is a file")
    assert f.read_text() == "keep me"


def test_failed_start_leaves_no_folder(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("to be or not to be, " * 3)  # 60 characters: the training part is shorter than 64
    out = tmp_path / "new" / "run"
    code, _, err = run(["train", "--corpus", short, *TINY, "--block-size", "64", "--out", out], capsys)
    one_line_error(code, err, "--block-size 64")
    assert not (tmp_path / "new").exists()
    mine = tmp_path / "mine"  # a folder the user made: kept, with only its own content
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    code, _, err = run(["train", "--corpus", short, *TINY, "--block-size", "64", "--out", mine], capsys)
    assert code == 2 and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_failure_after_start_removes_what_the_run_made(corpus, tmp_path, capsys):
    # a learning rate of 1e30 turns the loss into NaN at step 2; with no checkpoint, nothing is kept
    out = tmp_path / "new" / "run"
    code, _, err = run(["train", "--corpus", corpus, *TINY, "--lr", "1e30", "--min-lr", "0", "--warmup-iters", "0",
                        "--max-iters", "5", "--out", out], capsys)
    one_line_error(code, err, "nan at step 2", "no checkpoint", "--lr")
    assert not (tmp_path / "new").exists()


def test_nan_loss_keeps_the_last_good_checkpoint(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", "--corpus", corpus, *TINY, "--lr", "1e30", "--min-lr", "0", "--warmup-iters", "0",
                        "--max-iters", "5", "--ckpt-interval", "1", "--out", out], capsys)
    one_line_error(code, err, "nan at step 2", "checkpoint of step 1", "--lr", "--warmup-iters")
    assert json.loads((out / "train_state.json").read_text())["step"] == 1
    model = load_checkpoint(out).model  # finite weights: the NaN step was never applied
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sigint_to_a_running_process_saves_the_last_step(corpus, tmp_path, capsys):
    """A real Ctrl-C (SIGINT) to ``python -m minigpt train`` with the default --ckpt-interval 0."""
    out = tmp_path / "run"
    env = {**os.environ, "MINIGPT_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", "train", "--corpus", str(corpus), *TINY,
                             "--eval-interval", "5", "--eval-batches", "1", "--max-iters", "1000000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # "iter 5: ..." is printed from inside the training loop
            if line.startswith("iter 5:"):
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    step = json.loads((out / "train_state.json").read_text())["step"]
    assert step >= 5 and load_checkpoint(out).meta["step"] == step
    assert err.splitlines() == [f"minigpt: interrupted (SIGINT): saved step {step} to {out}; continue with --resume"]
    code, stdout, err = run(["train", "--out", out, "--resume", "--max-iters", step + 2], capsys)
    assert code == 0 and "final val loss" in stdout, err
    assert json.loads((out / "train_state.json").read_text())["step"] == step + 2


def test_sigterm_then_resume_ends_like_an_uninterrupted_run(corpus, tmp_path, capsys, monkeypatch):
    args = ["train", "--corpus", corpus, *TINY, "--max-iters", 10, "--eval-interval", 0]
    train_tiny(corpus, tmp_path / "whole", capsys, "--eval-interval", 0, iters=10)

    def train_and_stop_after_step_7(*a, callbacks=(), **kw):
        def stop(event, info):
            if event == "step" and info["iter"] == 7:
                os.kill(os.getpid(), signal.SIGTERM)
        return train(*a, callbacks=[*callbacks, stop], **kw)

    def unhandled(signum, frame):  # pytest's own handler would be SIG_DFL: it would end the test session
        raise AssertionError("train did not handle SIGTERM")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        with monkeypatch.context() as m:
            m.setattr("minigpt.train.train", train_and_stop_after_step_7)
            code, _, err = run([*args, "--out", tmp_path / "cut"], capsys)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # train put the handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert (code, err) == (143, f"minigpt: interrupted (SIGTERM): saved step 7 to {tmp_path / 'cut'}; "
                                "continue with --resume\n")
    assert json.loads((tmp_path / "cut" / "train_state.json").read_text())["step"] == 7
    assert "| step | 7 |" in (tmp_path / "cut" / "README.md").read_text()  # the interim card
    code, _, err = run(["train", "--out", tmp_path / "cut", "--resume"], capsys)
    assert code == 0, err
    resumed, whole = (read_safetensors(tmp_path / name / "model.safetensors")[0] for name in ("cut", "whole"))
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)  # bit for bit


def test_resume_of_an_incomplete_folder_names_what_is_missing(trained, tmp_path, capsys):
    for name in ("optimizer.safetensors", "train_state.json"):
        (trained / name).unlink()
    code, _, err = run(["train", "--out", trained, "--resume"], capsys)
    one_line_error(code, err, "cannot resume", "optimizer.safetensors, train_state.json missing", "--overwrite")
    assert "model.safetensors" not in err and "save_checkpoint" not in err
    leftover = tmp_path / "leftover"  # what an old version left after a failed start
    leftover.mkdir()
    (leftover / "args.json").write_text("{}")
    code, _, err = run(["train", "--out", leftover, "--resume"], capsys)
    one_line_error(code, err, "tokenizer.json, model.safetensors, config.json, meta.json, optimizer.safetensors")
    assert "re-save" not in err


def test_weights_that_are_not_finite(trained, capsys):
    ckpt = load_checkpoint(trained)
    with torch.no_grad():
        ckpt.model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    save_checkpoint(trained, ckpt.model, ckpt.tokenizer, meta=ckpt.meta)
    with pytest.raises(CheckpointError, match=r"NaN or infinite weights in 1 tensor\(s\): transformer.h.0.mlp"):
        load_checkpoint(trained)
    for argv in (["sample", "--ckpt", trained, "--max-new-tokens", "5"], ["eval", "--ckpt", trained]):
        code, out, err = run(argv, capsys)
        one_line_error(code, err, "NaN or infinite weights")
        assert out == ""


# --------------------------------------------------------------------------- messages name what the user typed

@pytest.mark.parametrize("flags, words", [
    (["--lr", "-1"], "--lr must be >= 0, got -1"),
    (["--lr", "0.01", "--min-lr", "0.1"], "--min-lr (0.1) must be <= --lr (0.01)"),
    (["--n-embd", "30", "--n-head", "4"], "--n-embd (30) must be divisible by --n-head (4)"),
    (["--beta2", "1"], "--beta2 must be in [0, 1)"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
])
def test_errors_name_the_flag(corpus, tmp_path, capsys, flags, words):
    code, _, err = run(["train", "--corpus", corpus, "--out", tmp_path / "x", *flags], capsys)
    one_line_error(code, err, words)
    assert "Config" not in err and "learning_rate" not in err
    assert not (tmp_path / "x").exists()


def test_unknown_characters_hint_is_a_flag(trained, capsys):
    code, _, err = run(["sample", "--ckpt", trained, "--prompt", "Zebra€"], capsys)
    one_line_error(code, err, "'Z'", "'€'", "pass --unk ' '")
    code, out, err = run(["sample", "--ckpt", trained, "--prompt", "Zebra€", "--unk", " ", "--max-new-tokens", "3"],
                         capsys)
    assert code == 0 and out.startswith("Zebra€"), err
    code, _, err = run(["sample", "--ckpt", trained, "--prompt", "x", "--unk", "€"], capsys)
    one_line_error(code, err, "--unk '€' is not a character of the vocabulary")


# --------------------------------------------------------------------------- honest, visible progress

def test_eval_reports_the_tokens_it_evaluated(trained, capsys, monkeypatch):
    data = json.loads((trained / "meta.json").read_text())["data"]
    val_tokens = data["val_tokens"]
    code, out, err = run(["eval", "--ckpt", trained, "--device", "cpu", "--batch-size", "2", "--eval-batches", "1"],
                         capsys)
    assert code == 0 and err == ""  # MINIGPT_PROGRESS=0: no bar
    assert out.strip().endswith(f"on 32 of the {val_tokens:,} tokens of {data['corpus']}")  # 2 windows of 16
    monkeypatch.delenv("MINIGPT_PROGRESS")
    code, out, err = run(["eval", "--ckpt", trained, "--device", "cpu", "--batch-size", "2"], capsys)
    windows = (val_tokens - 1) // 16
    assert code == 0 and f"on {windows * 16:,} of the" in out
    assert "eval: 100%" in err and f"{(windows + 1) // 2}/{(windows + 1) // 2}" in err  # the tqdm bar, batches


def test_interim_card_reports_the_latest_evaluation(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    ids = encode_corpus(TEXT, tok)
    model = build_model(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    cfg = TrainConfig(max_iters=4, batch_size=4, eval_interval=2, ckpt_interval=3, eval_batches=1,
                      train_eval_batches=1, device="cpu")
    cards = {}

    def read_card(event, info):
        if event == "step" and info["iter"] == 4:  # before step 4's own evaluation and save
            cards["step 3"] = (tmp_path / "README.md").read_text()

    history = train(model, ids[:2000], ids[2000:], cfg, tokenizer=tok, out_dir=tmp_path, callbacks=[read_card])
    at2 = next(e for e in history.evals if e["iter"] == 2)
    assert "| step | 3 |" in cards["step 3"]
    assert f"| val_loss | {round(at2['val_loss'], 4)} (evaluated at step 2) |" in cards["step 3"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_follow_the_umask(trained, tmp_path, umask):
    old = os.umask(umask)
    try:
        ckpt = load_checkpoint(trained)
        save_checkpoint(tmp_path / "copy", ckpt.model, ckpt.tokenizer)
        ckpt.tokenizer.save(tmp_path / "tok.json")
    finally:
        os.umask(old)
    written = [*(tmp_path / "copy").iterdir(), tmp_path / "tok.json"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(0o666 & ~umask) for p in written}
