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


@pytest.fixture(autouse=True)
def _quiet(monkeypatch):
    """No progress bars in test output, and every test leaves PyTorch's thread count as it found it."""
    monkeypatch.setenv("MINIGPT_PROGRESS", "0")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
