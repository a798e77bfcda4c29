import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from minigpt.cli import main

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 60
TINY = ["--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32",
        "--batch-size", "8", "--lr", "1e-2", "--warmup-iters", "5", "--threads", "1", "--device", "cpu"]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def trained(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(text_file), *TINY, "--max-iters", "30", "--eval-interval", "10",
                 "--out", str(out)]) == 0
    return out, capsys.readouterr().out


def test_train_writes_a_complete_run(trained):
    out, stdout = trained
    for name in ("model.safetensors", "config.json", "tokenizer.json", "meta.json", "README.md",
                 "metrics.jsonl", "args.json", "optimizer.safetensors", "train_state.json"):
        assert (out / name).is_file(), name
    assert [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0, 10, 20, 30]
    assert stdout.count("\niter ") + stdout.startswith("iter ") == 4
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("final val loss ") and "bits/char) in " in last
    val = float(last.split()[3])
    assert val < 2.5  # 30 steps on a repetitive text: well below log(vocab) ~ 3.1
    card = (out / "README.md").read_text()
    for words in ("tiny.txt", "char, vocab_size", "n_layer=1", "parameters", "max_iters=30",
                  f"{val:.4f} nats/token", "bits/char", "train time", "hardware"):
        assert words in card, words
    args = json.loads((out / "args.json").read_text())
    assert args["n_embd"] == 32 and args["max_iters"] == 30 and "out" not in args


def test_sample_and_eval(trained, capsys):
    out, stdout = trained
    assert main(["sample", "--ckpt", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "3",
                 "--num-samples", "2"]) == 0
    samples = capsys.readouterr().out
    assert samples.count("ROMEO:") >= 2 and "-" * 40 in samples
    assert main(["sample", "--ckpt", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "40", "--seed", "3",
                 "--num-samples", "2"]) == 0
    assert capsys.readouterr().out == samples  # seeded: reproducible
    assert main(["eval", "--ckpt", str(out), "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("val loss ") and "bits/char" in line
    final = float(stdout.strip().splitlines()[-1].split()[3])
    assert float(line.split()[2]) == pytest.approx(final, abs=1e-4)  # same number as training reported


def test_config_file_and_resume(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"corpus": str(text_file), "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16,
                               "max_iters": 6, "eval_interval": 3, "ckpt_interval": 3, "learning_rate": 1e-2,
                               "threads": 1, "device": "cpu", "out": str(out)}))
    assert main(["train", "--config", str(cfg), "--n-embd", "32"]) == 0
    assert json.loads((out / "config.json").read_text())["n_embd"] == 32  # the flag beats the file
    assert json.loads((out / "args.json").read_text())["lr"] == 1e-2
    assert main(["train", "--out", str(out), "--resume", "--max-iters", "9"]) == 0  # train further
    assert json.loads((out / "train_state.json").read_text())["step"] == 9
    assert "final val loss" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"n_layers": 2}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "n_layers" in capsys.readouterr().err


def test_shakespeare_bpe(tmp_path, capsys):
    out = tmp_path / "bpe"
    assert main(["train", "--corpus", "shakespeare", "--tokenizer", "bpe", "--vocab-size", "300", "--n-layer", "1",
                 "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--max-iters", "5", "--eval-interval", "0",
                 "--eval-batches", "2", "--threads", "1", "--device", "cpu", "--out", str(out)]) == 0
    assert "final val loss" in capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["data"]["corpus"] == "shakespeare" and meta["data"]["val_tokens"] < meta["data"]["val_chars"]
    assert json.loads((out / "tokenizer.json").read_text())["type"] == "bpe"
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 300


@pytest.mark.parametrize("argv, words", [
    (["train", "--corpus", "/no/such/file.txt", "--out", "OUT"], "no/such/file.txt"),
    (["train", "--n-embd", "30", "--n-head", "4", "--out", "OUT"], "divisible"),
    (["train", "--n-layer", "two", "--out", "OUT"], "--n-layer"),
    (["train", "--max-iters", "-1", "--out", "OUT"], "--max-iters must be >= 0"),
    (["train", "--corpus", "shakespeare"], "--out"),
    (["train", "--out", "OUT", "--resume"], "resume"),
    (["sample", "--ckpt", "/no/such/ckpt"], "/no/such/ckpt"),
    (["eval", "--ckpt", "/no/such/ckpt"], "/no/such/ckpt"),
    (["sample"], "--ckpt"),
    (["fly"], "fly"),
])
def test_bad_arguments_give_one_line(argv, words, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


def test_unknown_prompt_characters(trained, capsys):
    out, _ = trained
    assert main(["sample", "--ckpt", str(out), "--prompt", "Zebra€"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1 and "€" in err


def test_python_dash_m(tmp_path):
    env = {**os.environ, "MINIGPT_PROGRESS": "0", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "minigpt", "sample", "--ckpt", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("minigpt: error: ") and run.stderr.count("\n") == 1
    helps = subprocess.run([sys.executable, "-m", "minigpt", "train", "--help"], capture_output=True, text=True,
                           env=env, cwd=tmp_path)
    assert helps.returncode == 0 and "--corpus" in helps.stdout and "--resume" in helps.stdout
