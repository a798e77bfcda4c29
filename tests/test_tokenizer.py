import json
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.tokenizer import GPT2_SPLIT, BPETokenizer, CharTokenizer, load_tokenizer

ENGLISH = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles\n"
    "And by opposing end them. To die—to sleep,\n"
    "No more; and by a sleep to say we end\n"
    "The heart-ache and the thousand natural shocks\n"
    "That flesh is heir to: 'tis a consummation\n"
    "Devoutly to be wish'd. To die, to sleep;\n"
    "To sleep, perchance to dream—ay, there's the rub:\n"
) * 3

ANY_CHAR = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(ENGLISH, 256 + 60)


def naive_bpe(text: str, n_merges: int) -> list[tuple[int, int]]:
    """Reference trainer: recount every pair of every chunk from scratch at each step."""
    import re

    chunks = [list(c.encode("utf-8")) for c in re.findall(GPT2_SPLIT, text)]
    merges = []
    for k in range(n_merges):
        counts = Counter(p for c in chunks for p in zip(c, c[1:]))
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent, then smallest pair
        merges.append(pair)
        new = []
        for c in chunks:
            out, i = [], 0
            while i < len(c):
                if i + 1 < len(c) and (c[i], c[i + 1]) == pair:
                    out.append(256 + k)
                    i += 2
                else:
                    out.append(c[i])
                    i += 1
            new.append(out)
        chunks = new
    return merges


# ---------------------------------------------------------------- CharTokenizer

@settings(deadline=None)
@given(st.text(alphabet="abcdefgh \n,.!'ABC", min_size=0, max_size=200))
def test_char_round_trip(text):
    tok = CharTokenizer.from_text("abcdefgh \n,.!'ABC")
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_char_vocab_is_sorted_and_sized():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == sorted(set("hello world"))
    assert tok.vocab_size == len(tok) == 8
    assert tok.encode("hello") == [tok.chars.index(c) for c in "hello"]
    assert tok.tokens(tok.encode("he ")) == ["h", "e", " "]
    assert tok.decode(torch.tensor(tok.encode("low"))) == "low"  # tensors decode too


def test_char_unknown_characters_are_listed():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError) as e:
        tok.encode("abxyzx")
    msg = str(e.value)
    assert "'x'" in msg and "'y'" in msg and "'z'" in msg
    assert "unk" in msg  # names the fix


def test_char_unknown_list_is_truncated():
    tok = CharTokenizer.from_text("a")
    with pytest.raises(ValueError, match=r"25 character\(s\).*\.\.\."):
        tok.encode("bcdefghijklmnopqrstuvwxyz")


def test_char_unk_option():
    tok = CharTokenizer.from_text("abc", unk="?")
    assert "?" in tok.chars and tok.vocab_size == 4
    assert tok.decode(tok.encode("abxc")) == "ab?c"
    with pytest.raises(ValueError, match="single character"):
        CharTokenizer.from_text("abc", unk="??")


def test_char_decode_out_of_range():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])


def test_char_save_load(tmp_path):
    tok = CharTokenizer.from_text("héllo 🌍\n", unk="�")
    path = tmp_path / "tok.json"
    tok.save(path)
    back = load_tokenizer(path)
    assert isinstance(back, CharTokenizer)
    assert back.chars == tok.chars and back.unk == tok.unk
    assert back.encode("héllo?") == tok.encode("héllo?")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind


# ---------------------------------------------------------------- BPETokenizer

@settings(max_examples=150, deadline=None)
@given(st.text(ANY_CHAR, max_size=300))
def test_bpe_round_trip_any_text(bpe, text):
    ids = bpe.encode(text)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == text


@settings(deadline=None)
@given(st.text(ANY_CHAR, max_size=200))
def test_split_pattern_covers_every_character(text):
    import re

    assert "".join(re.findall(GPT2_SPLIT, text)) == text


def test_bpe_round_trip_special_cases(bpe):
    for text in ["", "\x00", "emoji 🤖🎭 and CJK 漢字", "lone \ud800 surrogate", "  \n\n\t x", "naïve café"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_encode_applies_merges_in_training_order(bpe):
    """Encoding = replaying every merge, in the order learned, inside each chunk."""
    import re

    from minigpt.tokenizer import _merge

    text = ENGLISH + " Whethers sleeping arrows, naturally 'tis"
    expected = []
    for chunk in re.findall(GPT2_SPLIT, text):
        ids = list(chunk.encode("utf-8"))
        for k, pair in enumerate(bpe.merges):
            ids = _merge(ids, pair, 256 + k)
        expected += ids
    assert bpe.encode(text) == expected


def test_bpe_merges_match_brute_force():
    tok = BPETokenizer.train(ENGLISH, 256 + 40)
    assert tok.merges == naive_bpe(ENGLISH, 40)
    assert len(tok.merges) == 40 and tok.vocab_size == 296 == len(tok)


@settings(max_examples=25, deadline=None)
@given(st.text(st.sampled_from("ab ab\nc'é"), max_size=80))
def test_bpe_merges_match_brute_force_random(text):
    assert BPETokenizer.train(text, 256 + 12).merges == naive_bpe(text, 12)


def test_bpe_first_merge_is_most_frequent_pair():
    tok = BPETokenizer.train(ENGLISH, 257)
    import re

    counts = Counter(p for c in re.findall(GPT2_SPLIT, ENGLISH) for b in [c.encode()] for p in zip(b, b[1:]))
    best = max(counts.values())
    assert counts[tok.merges[0]] == best
    assert tok.merges[0] == min(p for p, c in counts.items() if c == best)


def test_bpe_training_is_deterministic():
    a = BPETokenizer.train(ENGLISH, 300)
    b = BPETokenizer.train(ENGLISH, 300)
    assert a.merges == b.merges


def test_bpe_compresses_english(bpe):
    text = "To be, or not to be: that is the question of the sleep and the dream."
    assert len(bpe.encode(text)) < 0.7 * len(text.encode("utf-8"))
    toks = bpe.tokens(bpe.encode(" the question"))
    assert "".join(toks) == " the question" and toks[0] == " the"  # a word with its leading space


def test_bpe_tokens_display_partial_utf8():
    tok = BPETokenizer()  # bytes only
    assert tok.tokens(tok.encode("é")) == ["\ufffd", "\ufffd"]
    assert tok.decode([0xC3]) == "\ufffd"  # invalid UTF-8 decodes with a replacement


def test_bpe_vocab_size_too_small():
    with pytest.raises(ValueError, match="256"):
        BPETokenizer.train(ENGLISH, 255)


def test_bpe_stops_early_on_tiny_text():
    tok = BPETokenizer.train("abab", 1000)
    assert tok.merges == [(97, 98), (256, 256)]
    assert tok.vocab_size == 258
    assert tok.decode(tok.encode("abab")) == "abab" and tok.encode("abab") == [257]


def test_bpe_decode_out_of_range(bpe):
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([bpe.vocab_size])


def test_bpe_save_load(tmp_path, bpe):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    back = load_tokenizer(path)
    assert isinstance(back, BPETokenizer)
    assert back.merges == bpe.merges and back.vocab_size == bpe.vocab_size
    assert back.encode(ENGLISH) == bpe.encode(ENGLISH)
    assert load_tokenizer(bpe.to_dict()).merges == bpe.merges


# ---------------------------------------------------------------- load_tokenizer

@pytest.mark.parametrize("content, problem", [
    ("not json at all", "not valid JSON"),
    ("[1, 2, 3]", "unknown tokenizer type"),
    ('{"type": "wordpiece"}', "unknown tokenizer type"),
    ('{"type": "char", "chars": ["a", "bb"]}', "malformed"),
    ('{"type": "bpe", "merges": [[1, 2], [999, 3]]}', "malformed"),
    ('{"type": "bpe", "merges": "nope"}', "malformed"),
])
def test_load_tokenizer_rejects_garbage(tmp_path, content, problem):
    path = tmp_path / "garbage.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as e:
        load_tokenizer(path)
    assert "garbage.json" in str(e.value)


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_tokenizer(tmp_path / "nope.json")


def test_saved_json_has_type(tmp_path):
    CharTokenizer.from_text("ab").save(tmp_path / "c.json")
    BPETokenizer().save(tmp_path / "b.json")
    assert json.loads((tmp_path / "c.json").read_text())["type"] == "char"
    assert json.loads((tmp_path / "b.json").read_text())["type"] == "bpe"
