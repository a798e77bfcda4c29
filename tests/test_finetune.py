"""Tests for minigpt.finetune: classification head, freezing, SFT loss masks, LoRA, baselines."""

import copy

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig
from minigpt.finetune import (CLASSES, FT_VAL_PLAYS, GENRE_CLASS, BagOfWords, GPTClassifier, LoRALinear,
                              LogisticRegression, accuracy, add_lora, choice_logprobs, collate,
                              confusion_matrix, count_parameters, encode_texts, freeze, lora_parameters,
                              majority_baseline, merge_lora, pool, predict, remove_lora, sft_example,
                              split_of, train_classifier, unmerge_lora)
from minigpt.data import GENRES, VAL_PLAYS
from minigpt.objective import IGNORE_INDEX


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models: one thread is fastest, and far faster on a busy machine (no spin-waiting)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=3, n_head=4, n_embd=32, dropout=0.0)).eval()


def _batch(B=4, T=10, V=23, seed=1):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, V, (B, T), generator=g)
    lengths = torch.tensor([T, 3, 7, 1][:B])
    return idx, lengths


# ------------------------------------------------------------------ classification head

@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_classifier_shapes_and_gradients(gpt, pooling):
    clf = GPTClassifier(gpt, n_classes=3, pooling=pooling)
    idx, lengths = _batch()
    logits = clf(idx, lengths)
    assert logits.shape == (4, 3)
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert clf.head.weight.grad is not None and clf.head.weight.grad.abs().sum() > 0
    assert gpt.transformer.h[0].attn.c_attn.weight.grad.abs().sum() > 0  # flows into the body
    assert gpt.transformer.wpe.weight.grad[10:].abs().sum() == 0  # positions never used


def test_pooling_reads_the_right_positions(gpt):
    clf = GPTClassifier(gpt, n_classes=3, pooling="last")
    idx, lengths = _batch()
    h = gpt.transformer.ln_f(clf.hidden_at(idx, 3))
    feats = clf.features(idx, lengths)
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(feats[i], h[i, n - 1], atol=1e-6)
    mean = pool(h, lengths, "mean")
    assert torch.allclose(mean[1], h[1, :3].mean(0), atol=1e-6)


def test_padding_does_not_change_the_logits(gpt):
    """Right padding + causal attention: a padded row gives the logits of the unpadded one."""
    clf = GPTClassifier(gpt, n_classes=3, pooling="mean").eval()
    idx, _ = _batch(B=1, T=6)
    alone = clf(idx, torch.tensor([6]))
    padded = torch.cat([idx, torch.full((1, 5), 7)], 1)
    assert torch.allclose(clf(padded, torch.tensor([6])), alone, atol=1e-5)


def test_cached_hidden_states_give_the_same_logits(gpt):
    clf = GPTClassifier(gpt, n_classes=3)
    idx, lengths = _batch()
    h = clf.hidden_at(idx, 2)
    assert torch.allclose(clf(idx, lengths), clf(idx, lengths, hidden=h, start=2), atol=1e-5)


# ------------------------------------------------------------------ freezing

def test_freeze_freezes(gpt):
    clf = GPTClassifier(gpt, n_classes=3)
    trainable, total = freeze(clf, train_last=1)
    names = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("head.", "gpt.transformer.h.2.", "gpt.transformer.ln_f.")) for n in names)
    assert "gpt.transformer.h.2.mlp.c_fc.weight" in names
    assert trainable == sum(p.numel() for n, p in clf.named_parameters() if n in names)
    assert total == count_parameters(clf)[1] and trainable < total
    assert clf.frozen_prefix() == 2
    idx, lengths = _batch()
    F.cross_entropy(clf(idx, lengths), torch.tensor([0, 1, 2, 0])).backward()
    for n, p in clf.named_parameters():
        assert (p.grad is not None) == (n in names), n
    assert freeze(clf, train_last=0)[0] == 32 * 3 + 3  # linear probe: the head only
    assert freeze(clf, train_last=None)[0] == total
    assert clf.frozen_prefix() == 0
    with pytest.raises(ValueError):
        freeze(clf, train_last=4)


def test_frozen_weights_do_not_move_in_training(gpt):
    clf = GPTClassifier(gpt, n_classes=3)
    freeze(clf, train_last=1)
    before = copy.deepcopy(clf.state_dict())
    idx, lengths = _batch()
    labels = torch.tensor([0, 1, 2, 0])
    hist = train_classifier(clf, (idx, lengths, labels), (idx, lengths, labels), steps=5, batch_size=4,
                            eval_every=5)
    after = clf.state_dict()
    for n in before:
        moved = not torch.equal(before[n], after[n])
        assert moved == n.startswith(("head.", "gpt.transformer.h.2.", "gpt.transformer.ln_f.")), n
    assert len(hist["loss"]) == 5 and hist["eval_step"] == [5]


def test_training_with_and_without_cache_agree(gpt):
    idx, lengths = _batch()
    labels = torch.tensor([0, 1, 2, 0])
    runs = []
    for cache in (True, False):
        clf = GPTClassifier(copy.deepcopy(gpt), n_classes=3)
        torch.manual_seed(0)
        torch.nn.init.normal_(clf.head.weight, std=0.02)
        freeze(clf, train_last=1)
        runs.append(train_classifier(clf, (idx, lengths, labels), steps=4, batch_size=2,
                                     cache_frozen=cache)["loss"])
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)


def test_classifier_learns_a_planted_task(gpt):
    """Label = whether token 5 occurs: a few steps of training must beat chance clearly."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(6, 23, (64, 8), generator=g)
    labels = torch.arange(64) % 2
    idx[labels == 1, 3] = 5
    lengths = torch.full((64,), 8)
    clf = GPTClassifier(gpt, n_classes=2, pooling="mean")
    train_classifier(clf, (idx, lengths, labels), steps=60, batch_size=16, lr=3e-3)
    assert accuracy(predict(clf, idx, lengths), labels) > 0.9


# ------------------------------------------------------------------ the genre task and baselines

def test_genre_split_and_classes():
    assert set(GENRE_CLASS) == set(GENRES) and set(GENRE_CLASS.values()) == set(CLASSES)
    assert not set(FT_VAL_PLAYS) & set(VAL_PLAYS)
    assert {split_of(p) for p in VAL_PLAYS} == {"test"} and {split_of(p) for p in FT_VAL_PLAYS} == {"val"}
    assert split_of("hamlet") == "train"


def test_metrics():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    p = torch.tensor([0, 1, 1, 2, 0, 2])
    assert accuracy(p, y) == pytest.approx(4 / 6)
    cm = confusion_matrix(y, p, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert majority_baseline(y, 4).tolist() == [2, 2, 2, 2]


def test_bag_of_words_logistic_regression():
    texts = ["the king and the crown", "a crown for the king", "love and a wedding", "a merry wedding love"] * 3
    y = torch.tensor([1, 1, 0, 0] * 3)
    bow = BagOfWords(texts, min_count=1)
    X = bow(texts)
    assert X.shape == (12, len(bow.vocab)) and X[0, bow.vocab["the"]] == pytest.approx(torch.log1p(torch.tensor(2.0)))
    clf = LogisticRegression(l2=1e-3).fit(X, y)
    assert clf.predict(bow(["the crown", "a wedding"])).tolist() == [1, 0]


def test_encode_texts_pads_and_truncates():
    class Chars:
        def encode(self, s):
            return [ord(c) - 96 for c in s]

    idx, lengths = encode_texts(["abc", "abcdefgh", "a"], Chars(), max_tokens=5)
    assert idx.shape == (3, 5) and lengths.tolist() == [3, 5, 1]
    assert idx[0].tolist() == [1, 2, 3, 0, 0] and idx[1].tolist() == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ SFT loss mask

def test_sft_mask_ignores_prompt_tokens_exactly(gpt):
    prompt, response = [3, 4, 5, 6], [7, 8, 9]
    x, y = sft_example(prompt, response)
    assert x.tolist() == [3, 4, 5, 6, 7, 8] and y.tolist() == [-100, -100, -100, 7, 8, 9]
    x2, y2 = sft_example([1, 2], [10])
    X, Y = collate([(x, y), (x2, y2)])
    assert X[1].tolist() == [1, 2, 0, 0, 0, 0] and Y[1].tolist() == [-100, 10, -100, -100, -100, -100]
    logits = gpt(X)[0]
    from minigpt import lm_loss
    loss = lm_loss(logits, Y)
    logp = torch.log_softmax(logits, -1)
    manual = -(logp[0, 3, 7] + logp[0, 4, 8] + logp[0, 5, 9] + logp[1, 1, 10]) / 4  # response tokens only
    assert loss.item() == pytest.approx(manual.item(), abs=1e-5)
    # no gradient reaches the logits at prompt (or padding) positions
    leaf = logits.detach().requires_grad_(True)
    lm_loss(leaf, Y).backward()
    scored = (leaf.grad.abs().sum(-1) > 0)
    assert scored.tolist() == (Y != IGNORE_INDEX).tolist()
    unmasked = lm_loss(logits, torch.where(Y == IGNORE_INDEX, X.roll(-1, 1), Y))
    assert abs(unmasked.item() - loss.item()) > 1e-3


def test_choice_logprobs_is_the_chain_rule(gpt):
    prompts = [[1, 2, 3], [4, 5]]
    choices = [[6], [7, 8]]
    out = choice_logprobs(gpt, prompts, choices)
    assert out.shape == (2, 2)
    logp = torch.log_softmax(gpt(torch.tensor([[4, 5, 7]]))[0], -1)
    assert out[1, 1].item() == pytest.approx((logp[0, 1, 7] + logp[0, 2, 8]).item(), abs=1e-5)


def test_choice_logprobs_rules_match_a_hand_computation(gpt):
    """sum, mean and first against log_softmax of each unpadded prompt + choice, one at a time."""
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]  # different lengths: batches are padded
    choices = [[11], [12, 13], [14, 15, 16]]  # different lengths and first tokens
    terms = [[[] for _ in choices] for _ in prompts]
    for i, p in enumerate(prompts):
        for k, c in enumerate(choices):
            logp = torch.log_softmax(gpt(torch.tensor([p + c]))[0][0], -1)  # (T, V)
            terms[i][k] = [logp[len(p) - 1 + j, t].item() for j, t in enumerate(c)]
    expected = {"sum": [[sum(t) for t in row] for row in terms],
                "mean": [[sum(t) / len(t) for t in row] for row in terms],
                "first": [[t[0] for t in row] for row in terms]}
    for rule, want in expected.items():
        got = choice_logprobs(gpt, prompts, choices, batch_size=2, rule=rule)  # two batches
        assert got.shape == (3, 3)
        assert torch.allclose(got, torch.tensor(want), atol=1e-5), rule
    assert not torch.allclose(torch.tensor(expected["sum"]), torch.tensor(expected["first"]))
    with pytest.raises(ValueError, match="first tokens"):
        choice_logprobs(gpt, prompts, [[11, 12], [11, 13]], rule="first")
    with pytest.raises(ValueError, match="rule"):
        choice_logprobs(gpt, prompts, choices, rule="max")


# ------------------------------------------------------------------ LoRA

def test_lora_with_zero_b_leaves_outputs_unchanged(gpt):
    idx, _ = _batch()
    before = gpt(idx)[0]
    names = add_lora(gpt, r=4, alpha=8)
    assert len(names) == 3 * 4 and all(isinstance(gpt.get_submodule(n), LoRALinear) for n in names)
    assert all(m.lora_B.abs().sum() == 0 and m.lora_A.abs().sum() > 0 for m in map(gpt.get_submodule, names))
    assert torch.equal(gpt(idx)[0], before)


def test_lora_only_adapters_get_gradients_and_count(gpt):
    add_lora(gpt, r=4, alpha=8)
    trainable, total = count_parameters(gpt)
    C = 32
    per_block = 4 * (C + 3 * C) + 4 * (C + C) + 4 * (C + 4 * C) + 4 * (4 * C + C)
    assert trainable == 3 * per_block
    idx, _ = _batch()
    for m in gpt.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B)  # B = 0 would leave A without gradient
    gpt(idx, idx)[1].backward()
    adapters = {id(p) for p in lora_parameters(gpt)}
    for n, p in gpt.named_parameters():
        assert (p.grad is not None) == (id(p) in adapters), n


def test_lora_merge_gives_identical_outputs(gpt):
    idx, _ = _batch()
    base = copy.deepcopy(gpt)
    add_lora(gpt, r=4, alpha=8)
    for m in gpt.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.lora_B, std=0.1)
    adapted = gpt(idx)[0]
    assert not torch.allclose(adapted, base(idx)[0], atol=1e-3)
    m0 = gpt.transformer.h[0].attn.c_attn
    assert torch.allclose(m0.delta_weight(), m0.lora_B @ m0.lora_A * (8 / 4))  # the α/r scaling
    merge_lora(gpt)
    assert torch.allclose(gpt(idx)[0], adapted, atol=1e-5)
    unmerge_lora(gpt)
    assert torch.allclose(gpt(idx)[0], adapted, atol=1e-5)
    assert torch.allclose(gpt.transformer.h[0].attn.c_attn.base.weight, base.transformer.h[0].attn.c_attn.weight,
                          atol=1e-6)
    plain = remove_lora(gpt)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    assert torch.allclose(plain(idx)[0], adapted, atol=1e-5)


def test_lora_blocks_and_errors(gpt):
    names = add_lora(gpt, r=2, blocks=[2], targets=("mlp.c_fc",))
    assert names == ["transformer.h.2.mlp.c_fc"]
    with pytest.raises(ValueError):
        add_lora(gpt, targets=("nothing",))
    with pytest.raises(ValueError):
        LoRALinear(torch.nn.Linear(3, 3), r=0)


# ------------------------------------------------------------------ instruction template

def test_instruction_example_matches_hand_built_tokens():
    """Against a hand-built token list: one id per character, the input's ids kept as given."""
    from minigpt.finetune import END, instruction_example, instruction_prompt
    from minigpt.tokenizer import CharTokenizer

    chars = sorted(set("### Instruction:\nWho?\n\n### Input:\n### Response:\nab<END>"))
    tok = CharTokenizer(chars)
    i = {c: n for n, c in enumerate(chars)}.__getitem__  # the hand-made encoder
    head = [i(c) for c in "### Instruction:\nWho?\n\n### Input:\n"]
    tail = [i(c) for c in "\n\n### Response:\n"]
    inp = [i("b"), i("a"), i("b")]  # ids given directly, never re-encoded
    prompt = instruction_prompt(tok, "Who?", inp)
    assert prompt == head + inp + tail
    answer = [i(c) for c in "ab<END>"]
    assert END == "<END>"
    x, y = instruction_example(tok, "Who?", inp, "ab")
    seq = prompt + answer
    assert x.tolist() == seq[:-1]
    P = len(prompt)
    assert y.tolist() == [IGNORE_INDEX] * (P - 1) + answer  # only the response and END are scored
    # the text form is INSTRUCTION_TEMPLATE filled in
    from minigpt.finetune import INSTRUCTION_TEMPLATE
    assert tok.decode(prompt) == INSTRUCTION_TEMPLATE.format(instruction="Who?", input="bab")


def test_instruction_prompts_have_one_length_for_inputs_of_one_length():
    """Inputs cut to n tokens give prompts of one length (so they batch without padding)."""
    from minigpt import pretrained
    from minigpt.finetune import instruction_prompt

    tok = pretrained().tokenizer
    cuts = [tok.encode(t)[:12] for t in ("O Romeo, Romeo, wherefore art thou Romeo?",
                                         "Once more unto the breach, dear friends, once more;")]
    lengths = {len(instruction_prompt(tok, "Which play?", ids)) for ids in cuts}
    assert len(lengths) == 1
