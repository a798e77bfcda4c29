import pytest

from minigpt import GPTConfig


@pytest.mark.parametrize("kwargs, field", [
    ({"n_embd": 130, "n_head": 4}, "n_embd"),
    ({"n_layer": 0}, "n_layer"),
    ({"vocab_size": -3}, "vocab_size"),
    ({"block_size": 2.5}, "block_size"),
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": -0.1}, "dropout"),
    ({"activation": "swish"}, "activation"),
    ({"attn_impl": "flash"}, "attn_impl"),
    ({"bias": "yes"}, "bias"),
])
def test_invalid_configs_name_the_field(kwargs, field):
    with pytest.raises((ValueError, TypeError)) as err:
        GPTConfig(**kwargs)
    assert field in str(err.value)


def test_json_round_trip(tmp_path):
    cfg = GPTConfig(vocab_size=100, n_embd=64, n_head=8, dropout=0.1, activation="relu")
    assert GPTConfig.from_json(cfg.to_json()) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert GPTConfig.from_json(tmp_path / "c.json") == cfg
    assert cfg.head_size == 8


def test_unknown_and_bad_json():
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({"n_embed": 3})
    with pytest.raises(ValueError, match="not valid JSON"):
        GPTConfig.from_json("{not json")
