"""Supervised fine-tuning (SFT) of the language model on prompt → response pairs, with a loss mask.

An SFT example is one sequence, the prompt followed by the response. The model is trained with
the ordinary next-token loss, except that only the *response* tokens are scored: the targets of
prompt positions are set to ``IGNORE_INDEX`` (-100), which ``cross_entropy`` skips. The model
learns to answer, not to reproduce prompts. Batches are right-padded; padded targets are ignored.

Our task is the genre of a speech, asked as text: ``"<speech>\\n\\nGENRE:\\n"`` → ``"comedy\\n"``.
At test time the model scores each possible answer by its log-probability and picks the best.

Instruction-style examples fill a fixed template (:data:`INSTRUCTION_TEMPLATE`, the Alpaca layout)
and end the response with :data:`END`, so that generation knows where to stop.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..objective import IGNORE_INDEX, lm_loss
from .classify import CLASSES, PAD_ID, Example, _batches

PROMPT = "{text}\n\nGENRE:\n"
RESPONSE = "{label}\n"
# The Alpaca prompt (Taori et al., 2023, github.com/tatsu-lab/stanford_alpaca) without its opening sentence.
INSTRUCTION_TEMPLATE = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
END = "<END>"  # ends every response; generation stops when it appears


def sft_example(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x and masked targets y (both length P + R − 1) for one prompt/response pair.

    The sequence s = prompt + response; x = s[:-1], y = s[1:]; y's first P − 1 entries (targets
    that are prompt tokens) are ``IGNORE_INDEX``, so the loss is over the R response tokens only.
    """
    if len(prompt_ids) < 1 or len(response_ids) < 1:
        raise ValueError("an SFT example needs a non-empty prompt and a non-empty response")
    s = torch.tensor(list(prompt_ids) + list(response_ids), dtype=torch.long)
    x, y = s[:-1], s[1:].clone()
    y[: len(prompt_ids) - 1] = IGNORE_INDEX
    return x, y


def collate(examples: Sequence[tuple[torch.Tensor, torch.Tensor]], pad_id: int = PAD_ID
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack examples into (B, T) batches, right-padded: x with ``pad_id``, y with ``IGNORE_INDEX``."""
    T = max(len(x) for x, _ in examples)
    X = torch.full((len(examples), T), pad_id, dtype=torch.long)
    Y = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        X[i, :len(x)], Y[i, :len(y)] = x, y
    return X, Y


def prompt_ids(text: str, tokenizer, max_text_tokens: int = 48) -> list[int]:
    """The prompt for one speech: its first ``max_text_tokens`` tokens, then the question."""
    text = tokenizer.decode(tokenizer.encode(text)[:max_text_tokens])
    return tokenizer.encode(PROMPT.format(text=text))


def instruction_prompt(tokenizer, instruction: str, input_ids: Sequence[int]) -> list[int]:
    """Token ids of :data:`INSTRUCTION_TEMPLATE` filled in, the input given as token ids.

    The text before and after the input is encoded on its own and the input's ids are kept as
    they are, so inputs cut to n tokens give prompts of one length, whatever the cut left.
    """
    before, after = INSTRUCTION_TEMPLATE.split("{input}")
    return tokenizer.encode(before.format(instruction=instruction)) + list(input_ids) + tokenizer.encode(after)


def instruction_example(tokenizer, instruction: str, input_ids: Sequence[int], response: str
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """An SFT example (x, y) for the template: prompt, then ``response + END``; only the response is scored."""
    return sft_example(instruction_prompt(tokenizer, instruction, input_ids), tokenizer.encode(response + END))


def genre_pairs(examples: Sequence[Example], tokenizer, max_text_tokens: int = 48
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """SFT examples (x, y) for the genre task: prompt = speech + question, response = class name."""
    return [sft_example(prompt_ids(e.text, tokenizer, max_text_tokens),
                        tokenizer.encode(RESPONSE.format(label=CLASSES[e.label]))) for e in examples]


def train_sft(model, examples: Sequence[tuple[torch.Tensor, torch.Tensor]], *, steps: int = 100,
              batch_size: int = 16, lr: float = 3e-4, warmup: int = 10, weight_decay: float = 0.0,
              seed: int = 1337) -> dict[str, list]:
    """Fine-tune a GPT's trainable parameters on masked SFT examples; returns ``step``, ``loss``.

    AdamW, linear warmup then cosine decay to lr/10, gradient clipping at 1.
    """
    from ..train import TrainConfig, lr_at

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to fine-tune")
    cfg = TrainConfig(max_iters=steps, learning_rate=lr, min_lr=lr / 10, warmup_iters=warmup)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, list] = {"step": [], "loss": []}
    model.train()
    for step, b in zip(range(steps), _batches(len(examples), min(batch_size, len(examples)), gen)):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        x, y = collate([examples[i] for i in b.tolist()])
        loss = lm_loss(model(x)[0], y)  # only response positions count
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        hist["step"].append(step)
        hist["loss"].append(loss.item())
    model.eval()
    return hist


@torch.no_grad()
def response_loss(model, examples: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int = 64) -> float:
    """Mean loss per response token over SFT examples (prompt and padding ignored), in eval mode."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for i in range(0, len(examples), batch_size):
            x, y = collate(examples[i:i + batch_size])
            n = int((y != IGNORE_INDEX).sum())
            total += lm_loss(model(x)[0], y).item() * n
            count += n
    finally:
        model.train(was)
    return total / count


RULES: tuple[str, ...] = ("sum", "mean", "first")


@torch.no_grad()
def choice_logprobs(model, prompts: Sequence[Sequence[int]], choices: Sequence[Sequence[int]],
                    batch_size: int = 64, rule: str = "sum") -> torch.Tensor:
    """The score of every choice after every prompt, (N, K), from the log-probabilities of its tokens.

    ``rule="sum"``: log P(choice | prompt), summed over the choice's tokens (the chain rule); it
    favours short choices, each extra token adding a log-probability below 0. ``"mean"``: that sum
    divided by the choice's length. ``"first"``: log P(first token of the choice | prompt) alone,
    one number per choice whatever its length, read from one forward pass of the prompt; the
    choices' first tokens must differ, so that the first token decides which choice is meant.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if rule == "first" and len({c[0] for c in choices}) < len(choices):
        raise ValueError("rule='first' needs choices whose first tokens differ")
    was = model.training
    model.eval()
    rows = []
    try:
        for i in range(0, len(prompts), batch_size):
            if rule == "first":
                chunk = prompts[i:i + batch_size]
                x = collate([(torch.tensor(p), torch.tensor(p)) for p in chunk])[0]  # (B, T): prompts right-padded
                last = torch.tensor([len(p) - 1 for p in chunk])  # each prompt's last real position
                logp = torch.log_softmax(model(x)[0][torch.arange(len(chunk)), last].float(), -1)  # (B, V)
                rows.append(logp[:, [c[0] for c in choices]])  # (B, K)
                continue
            x, y = collate([sft_example(p, c) for p in prompts[i:i + batch_size] for c in choices])
            logp = torch.log_softmax(model(x)[0].float(), -1)
            keep = y != IGNORE_INDEX  # (B·K, T): the choice's tokens
            tok = logp.gather(-1, y.clamp(min=0)[..., None])[..., 0] * keep  # (B·K, T)
            score = tok.sum(1) if rule == "sum" else tok.sum(1) / keep.sum(1)
            rows.append(score.reshape(-1, len(choices)))
    finally:
        model.train(was)
    return torch.cat(rows)


def predict_genre(model, tokenizer, examples: Sequence[Example], max_text_tokens: int = 48,
                  rule: str = "sum") -> torch.Tensor:
    """Class index (N,) whose name scores highest after each speech's genre prompt (see :func:`choice_logprobs`)."""
    prompts = [prompt_ids(e.text, tokenizer, max_text_tokens) for e in examples]
    choices = [tokenizer.encode(RESPONSE.format(label=c)) for c in CLASSES]
    return choice_logprobs(model, prompts, choices, rule=rule).argmax(-1)
