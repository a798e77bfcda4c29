import pytest
import torch

from minigpt import GPT, GPTConfig


@pytest.fixture
def tiny_config() -> GPTConfig:
    return GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=4, n_embd=32)


@pytest.fixture
def tiny_model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config).eval()
