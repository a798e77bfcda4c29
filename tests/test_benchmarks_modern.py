"""benchmarks/modern_arch.py (chapter 09's table): a tiny run through the whole script, and the
stored results that notebook 09 reads, both checked against the schema and against facts computed
here independently of the script."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["GPT-2", "+RMSNorm", "+RoPE", "+SwiGLU", "+GQA", "all (+untied, qk-norm, no bias)"]


def _load_script():
    spec = importlib.util.spec_from_file_location("modern_arch_bench", ROOT / "benchmarks" / "modern_arch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_schema(res: dict) -> None:
    m, st, vs, ln = res["machine"], res["settings"], res["variants"], res["length"]
    assert {type(m[k]) for k in ("cpu", "torch", "date")} == {str} and len(m["date"]) == 10
    assert isinstance(m["threads"], int) and all(isinstance(m[k], float) for k in ("load_before", "load_after", "wall_s"))
    assert isinstance(st["steps"], int) and isinstance(st["budget"], str) and st["budget"]
    assert isinstance(st["base"], dict) and st["base"]["block_size"] == st["block_size"]
    n = len(st["seeds"])
    assert [v["name"] for v in vs] == NAMES
    for v in vs:
        for k in ("tokens_per_s", "val_loss_steps", "val_loss_time", "steps_in_time"):
            assert len(v[k]) == n, (v["name"], k)
        assert all(math.isfinite(x) and 0 < x < 10 for x in v["val_loss_steps"] + v["val_loss_time"])
        assert all(x > 0 for x in v["tokens_per_s"]) and all(isinstance(x, int) and x >= 1 for x in v["steps_in_time"])
        assert isinstance(v["params"], int) and isinstance(v["kv_bytes_per_token"], int)
    # GPT-2 is its own budget: it trains exactly S steps in its own time, and the two losses are one run.
    assert vs[0]["steps_in_time"] == [st["steps"]] * n and vs[0]["val_loss_time"] == vs[0]["val_loss_steps"]
    T0 = st["block_size"]
    assert ln["train_len"] == T0 and ln["eval_len"] == 4 * T0
    assert len(ln["rope"]["loss_by_position"]) == 4 * T0 and len(ln["learned"]["loss_by_position"]) == T0
    assert isinstance(ln["learned"]["sliding_window_loss"], float)
    assert str(T0) in ln["learned"]["error"] and "block_size" in ln["learned"]["error"]


def test_quick_run_schema_and_facts(tmp_path):
    mod = _load_script()
    res = mod.main(["--quick", "--steps", "3", "--seeds", "0,1", "--workers", "1", "--length-windows", "6",
                    "--out", str(tmp_path / "m")])
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(res))
    assert (tmp_path / "m.md").read_text().count("\n| ") == 7  # header + 6 rungs
    check_schema(res)
    st, vs, ln = res["settings"], res["variants"], res["length"]
    # KV-cache bytes per token by hand: keys and values, every layer, kv heads x head size, float32.
    L, C, H = st["base"]["n_layer"], st["base"]["n_embd"], st["base"]["n_head"]
    assert [v["kv_bytes_per_token"] for v in vs] == [2 * L * C * 4] * 4 + [2 * L * (C // H) * 2 * 4] * 2
    # Learned positions add block_size x n_embd parameters that RoPE does not have (RMSNorm: no bias).
    assert vs[1]["params"] - vs[2]["params"] == st["block_size"] * C
    # The rotary model loaded into a longer context gives the same losses at positions 0..T0-1 as the
    # model it came from (causal attention, same rotations): checks the load past block_size.
    T0 = ln["train_len"]
    assert ln["rope"]["loss_by_position"][:T0] == pytest.approx(ln["rope"]["sliding_loss_by_position"][:T0], abs=1e-4)
    assert ln["learned"]["loss_by_position"] == pytest.approx(ln["learned"]["sliding_loss_by_position"][:T0], abs=1e-4)


def test_stored_results_match_schema():
    path = ROOT / "benchmarks" / "results" / "modern_arch.json"
    if not path.exists():
        pytest.skip("no stored results yet")
    res = json.loads(path.read_text())
    check_schema(res)
    assert len(res["settings"]["seeds"]) >= 3
