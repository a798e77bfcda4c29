"""minigpt: a small, tested GPT in PyTorch, the reference for the course notebooks."""

from .attention import CausalSelfAttention, KVCache, attention, causal_mask
from .checkpoint import Checkpoint, load_checkpoint, pretrained, save_checkpoint
from .config import GPTConfig
from .data import load_plays, load_text, shakespeare
from .device import pick_device, seed_everything, setup_notebook
from .importers import config_from_hf_llama, from_hf_llama
from .model import GPT, Block, FeedForward
from .norms import RMSNorm
from .objective import bits_per_char, lm_loss, perplexity, sequence_logprob, shift_for_lm
from .sampling import beam_search, generate, generate_text
from .tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

__version__ = "0.1.0"
