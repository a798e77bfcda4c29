"""minigpt: a small, tested GPT in PyTorch, the reference for the course notebooks."""

from .attention import CausalSelfAttention, KVCache, attention, causal_mask
from .config import GPTConfig
from .device import pick_device, seed_everything, setup_notebook
from .model import GPT, Block, FeedForward
from .objective import bits_per_char, lm_loss, perplexity, sequence_logprob, shift_for_lm

__version__ = "0.1.0"
