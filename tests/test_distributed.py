"""DDP: two gloo processes on CPU train exactly like one process on the same global batch.

The main test launches the real command, ``torchrun --nproc_per_node=2 -m minigpt train``, for
3 steps, resumes it to 6, and compares the weights with an uninterrupted single-process run of
6 steps (batch 8 = 2 ranks x 4 rows, 2 accumulation micro-steps, so ``no_sync`` is exercised).
The CUDA tests run only where a GPU is present (the lent GPU in benchmarks/pretrain_gpu.py's run).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import distributed
from minigpt.checkpoint import load_checkpoint
from minigpt.cli import main
from minigpt.train import build_model

ROOT = Path(__file__).resolve().parents[1]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nJULIET:\nO Romeo, Romeo!\n\n" * 40
TINY = ["--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
        "--batch-size", "8", "--grad-accum", "2", "--lr", "1e-2", "--warmup-iters", "2", "--lr-decay-iters", "6",
        "--eval-interval", "0", "--eval-batches", "2", "--threads", "1", "--device", "cpu"]


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINIGPT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "minigpt", "train", *args]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder).model.state_dict()


def test_two_gloo_processes_equal_one_process_and_resume(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    ddp, single = tmp_path / "ddp", tmp_path / "single"

    first = _torchrun(2, "--corpus", str(text), *TINY, "--max-iters", "3", "--out", str(ddp))
    assert first.stdout.count("parameters, ") == 1  # rank 0 alone prints
    assert json.loads((ddp / "train_state.json").read_text())["step"] == 3
    resumed = _torchrun(2, "--out", str(ddp), "--resume", "--max-iters", "6")
    assert resumed.stdout.count("final val loss") == 1
    assert json.loads((ddp / "meta.json").read_text())["step"] == 6
    assert "× 2 processes (DDP)" in (ddp / "README.md").read_text()

    assert main(["train", "--corpus", str(text), *TINY, "--max-iters", "6", "--out", str(single)]) == 0
    got, want = _weights(ddp), _weights(single)
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)
    init = build_model(load_checkpoint(single).config, 1337).state_dict()
    moved = max((want[n] - init[n]).abs().max().item() for n in want)
    assert moved > 1e-2  # training moved the weights far beyond the tolerance: the check is not vacuous
    # the metrics of the DDP run (rank 0's evaluation) match the single run's
    m_ddp = [json.loads(x) for x in (ddp / "metrics.jsonl").read_text().splitlines()]
    m_one = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [e["iter"] for e in m_ddp] == [3, 6] and [e["iter"] for e in m_one] == [6]
    assert m_ddp[-1]["val_loss"] == pytest.approx(m_one[-1]["val_loss"], abs=1e-4)


def test_shard_rows_split_the_global_batch():
    shards = [distributed.shard_rows(12, distributed.DistInfo(rank=r, world_size=3)) for r in range(3)]
    assert [(s.start, s.stop) for s in shards] == [(0, 4), (4, 8), (8, 12)]
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        distributed.shard_rows(10, distributed.DistInfo(rank=0, world_size=3))


def test_one_process_is_not_distributed(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.setup("cpu")
    assert info == distributed.DistInfo(0, 1, 0) and info.is_main and not info.enabled
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.mean_over_ranks(2.5, torch.device("cpu")) == 2.5


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_bf16_fused_training_tracks_float32(tmp_path):
    """bf16 autocast + fused AdamW + TF32 on CUDA ends near the float32 CPU run (same batches)."""
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = [a for a in TINY if a not in ("--device", "cpu")]
    assert main(["train", "--corpus", str(text), *args, "--max-iters", "6", "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    assert main(["train", "--corpus", str(text), *args, "--max-iters", "6", "--device", "cuda", "--out", str(tmp_path / "g")]) == 0
    lc = json.loads((tmp_path / "c" / "meta.json").read_text())["val_loss"]
    lg = json.loads((tmp_path / "g" / "meta.json").read_text())["val_loss"]
    assert abs(lc - lg) < 0.05, (lc, lg)


@cuda
def test_cuda_compile_matches_eager(tmp_path):
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = [a for a in TINY if a not in ("--device", "cpu")] + ["--device", "cuda", "--dtype", "float32", "--max-iters", "4"]
    assert main(["train", "--corpus", str(text), *args, "--out", str(tmp_path / "e")]) == 0
    assert main(["train", "--corpus", str(text), *args, "--compile", "--out", str(tmp_path / "k")]) == 0
    for name, w in _weights(tmp_path / "e").items():
        torch.testing.assert_close(_weights(tmp_path / "k")[name], w, atol=2e-3, rtol=1e-2, msg=name)


@cuda
def test_cuda_nccl_ddp_one_process_equals_plain_training(tmp_path):
    """torchrun --nproc_per_node=1 on CUDA goes through NCCL + DDP and gives plain training's weights."""
    text = tmp_path / "tiny.txt"
    text.write_text(TEXT, encoding="utf-8")
    args = [a for a in TINY if a not in ("--device", "cpu")] + ["--device", "cuda", "--dtype", "float32", "--max-iters", "4"]
    r = _torchrun(1, "--corpus", str(text), *args, "--out", str(tmp_path / "d"))
    assert "device cuda" in r.stdout and r.stdout.count("parameters, ") == 1
    assert main(["train", "--corpus", str(text), *args, "--out", str(tmp_path / "p")]) == 0
    want = _weights(tmp_path / "p")
    for name, w in _weights(tmp_path / "d").items():
        torch.testing.assert_close(w, want[name], atol=1e-5, rtol=1e-4, msg=name)


def test_check_device_compares_with_cpu_and_catches_zero_probability_samples(monkeypatch):
    from minigpt.device import check_device

    assert check_device("cpu") == {"logits": 0.0, "loss": 0.0, "grads": 0.0, "zero_prob_samples": 0}
    # a device whose sampler picks a filtered-out (zero-probability) token
    monkeypatch.setattr(torch, "multinomial", lambda p, n, **kw: torch.full((p.size(0), n), 11))
    with pytest.raises(AssertionError, match="zero_prob_samples"):
        check_device("cpu")


NO_SYNC_SCRIPT = r"""
import torch
import minigpt.distributed as d
from minigpt.config import GPTConfig
from minigpt.train import TrainConfig, build_model, train

calls = []
plain_wrap = d.wrap


def counting_wrap(model, device):
    ddp = plain_wrap(model, device)

    def hook(state, bucket):  # called once per gradient bucket per all-reduce
        calls.append(1)
        fut = torch.futures.Future()
        fut.set_result(bucket.buffer())
        return fut

    ddp.register_comm_hook(None, hook)
    return ddp


d.wrap = counting_wrap
model = build_model(GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16))
cfg = TrainConfig(max_iters=3, batch_size=2, grad_accum=4, eval_interval=0, train_eval_batches=1,
                  device="cpu", threads=1)
train(model, torch.randint(20, (500,)), None, cfg)
d.cleanup()
print("ALLREDUCES", len(calls))
"""


def test_accumulation_all_reduces_once_per_optimizer_step(tmp_path):
    """grad_accum=4 for 3 steps: 3 all-reduces (one small bucket each), not 12 -- no_sync works."""
    env = {**os.environ, "MINIGPT_PROGRESS": "0", "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    r = subprocess.run([sys.executable, "-c", NO_SYNC_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ALLREDUCES 3" in r.stdout, r.stdout
