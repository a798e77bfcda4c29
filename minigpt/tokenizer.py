"""Tokenizers: text <-> integer ids.

* :class:`CharTokenizer` — one id per character of a fixed, sorted vocabulary.
* :class:`BPETokenizer` — byte-level byte-pair encoding trained from scratch, as in GPT-2: the
  256 byte values are the first tokens, then each merge glues the most frequent adjacent pair into
  a new token. Any string round-trips exactly (it is UTF-8 bytes underneath).

Both save to JSON (no pickle) with a ``"type"`` field; :func:`load_tokenizer` reads either back.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

# GPT-2's pre-split, written for the stdlib ``re``: English contractions, a word with its leading
# space (``[^\W\d_]`` is any Unicode letter, and also the rare numeric characters that are not
# decimal digits, such as ² ½ Ⅻ, which GPT-2's ``\p{L}`` excludes: ``re`` keeps "x²" one chunk,
# GPT-2 splits it), a number, a run of other symbols, and whitespace
# (a trailing space stays off the next word). Every character falls in some branch, so the
# chunks always join back to the text. Merges never cross a chunk boundary.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""


def _as_ids(ids: Iterable[int]) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]  # tensors, arrays too


def _check_ids(ids: list[int], vocab_size: int) -> None:
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"token id(s) {bad[:10]} out of range: this tokenizer has ids 0..{vocab_size - 1}")


UNK_HINT = "pass unk='?' (any character)"  # the command line replaces it with its --unk flag


def _save_json(d: dict[str, Any], path: str | Path) -> None:
    """Write JSON atomically: a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        mask = os.umask(0o077)  # mkstemp makes 0o600: give the file an ordinary new file's mode
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a text.

    Unknown characters raise a ``ValueError`` unless ``unk`` names a stand-in character.
    """

    def __init__(self, chars: Iterable[str], unk: str | None = None) -> None:
        self.chars: list[str] = list(chars)
        if not self.chars or any(not isinstance(c, str) or len(c) != 1 for c in self.chars):
            raise ValueError("CharTokenizer needs a non-empty list of single characters")
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer characters must be unique")
        if unk is not None and unk not in self.chars:
            raise ValueError(f"unk character {unk!r} is not in the vocabulary")
        self.unk = unk
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> "CharTokenizer":
        """Vocabulary = sorted distinct characters of ``text`` (plus ``unk``, if given)."""
        if not isinstance(text, str) or not text:
            raise ValueError("CharTokenizer.from_text needs a non-empty string")
        if unk is not None and (not isinstance(unk, str) or len(unk) != 1):
            raise ValueError(f"unk must be a single character, got {unk!r}")
        return cls(sorted(set(text) | ({unk} if unk is not None else set())), unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def __len__(self) -> int:
        return len(self.chars)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, unk={self.unk!r})"

    def encode(self, text: str) -> list[int]:
        """Characters -> ids. Unknown characters map to ``unk`` or raise a ``ValueError``."""
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            if self.unk is not None:
                u = stoi[self.unk]
                return [stoi.get(c, u) for c in text]
            missing = sorted(set(text) - set(stoi))
            shown = ", ".join(repr(c) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise ValueError(
                f"{len(missing)} character(s) not in the vocabulary: {shown}. Build the tokenizer "
                f"from a text that contains them, or {UNK_HINT} to map unknown characters to it.") from None

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text (exact inverse of :meth:`encode` for text without unknown characters)."""
        ids = _as_ids(ids)
        _check_ids(ids, self.vocab_size)
        return "".join(self.chars[i] for i in ids)

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """The string of each id, e.g. for the axis labels of an attention plot."""
        ids = _as_ids(ids)
        _check_ids(ids, self.vocab_size)
        return [self.chars[i] for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.chars, "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        if d.get("type") != "char" or not isinstance(d.get("chars"), list):
            raise ValueError("not a char tokenizer: expected {'type': 'char', 'chars': [...]}")
        return cls(d["chars"], unk=d.get("unk"))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (atomically); read it back with :func:`load_tokenizer`."""
        _save_json(self.to_dict(), path)


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of ``pair`` in ``ids``, left to right."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level BPE: ids 0-255 are bytes, id ``256 + k`` is ``merges[k]`` glued together.

    Text is UTF-8 encoded with ``surrogatepass``, so every Python string, even one with lone
    surrogates, round-trips exactly; ids that do not form valid UTF-8 (e.g. sampled by a model)
    decode with U+FFFD replacement characters.
    """

    def __init__(self, merges: Iterable[tuple[int, int]] = (), pattern: str = GPT2_SPLIT) -> None:
        self.merges: list[tuple[int, int]] = []
        self.vocab: list[bytes] = [bytes([i]) for i in range(256)]  # id -> the bytes it stands for
        for k, pair in enumerate(merges):
            a, b = (int(x) for x in pair)
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"merge {k} {pair} refers to a token not defined before it")
            self.merges.append((a, b))
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: 256 + k for k, pair in enumerate(self.merges)}  # pair -> new id
        self.pattern = re.compile(pattern)
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, verbose: bool = False) -> "BPETokenizer":
        """Learn ``vocab_size - 256`` merges from ``text``, most frequent pair first.

        Chunks (see ``GPT2_SPLIT``) are counted once; merges work on the table of unique chunks and
        update pair counts only for chunks that contain the merged pair. Ties go to the smallest
        pair, so training is deterministic. Training stops early, with fewer merges and a smaller
        ``vocab_size`` than asked, when no adjacent pair is left to merge (a very short text).
        """
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 256:
            raise ValueError(f"vocab_size must be an int >= 256 (the 256 byte tokens), got {vocab_size!r}")
        tok = cls()
        chunk_counts = Counter(tok.pattern.findall(text))
        words = [list(w.encode("utf-8", "surrogatepass")) for w in chunk_counts]
        counts = list(chunk_counts.values())
        pair_count: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> words containing it
        for w, (word, c) in enumerate(zip(words, counts)):
            for p in zip(word, word[1:]):
                pair_count[p] += c
                where[p].add(w)
        heap = [(-c, p) for p, c in pair_count.items()]  # max count first, then smallest pair
        heapq.heapify(heap)
        while len(tok.merges) < vocab_size - 256 and heap:
            neg, pair = heapq.heappop(heap)
            if pair_count.get(pair, 0) != -neg:
                continue  # stale heap entry: this pair's count changed since it was pushed
            new_id = 256 + len(tok.merges)
            tok.merges.append(pair)
            tok.vocab.append(tok.vocab[pair[0]] + tok.vocab[pair[1]])
            changed = set()
            for w in sorted(where.pop(pair)):
                old, c = words[w], counts[w]
                new = words[w] = _merge(old, pair, new_id)
                old_pairs, new_pairs = list(zip(old, old[1:])), list(zip(new, new[1:]))
                for p in old_pairs:
                    pair_count[p] -= c
                for p in new_pairs:
                    pair_count[p] += c
                for p in set(old_pairs) - set(new_pairs):
                    where[p].discard(w)
                for p in set(new_pairs):
                    where[p].add(w)
                changed.update(old_pairs, new_pairs)
            for p in changed:
                if pair_count[p] > 0:
                    heapq.heappush(heap, (-pair_count[p], p))
                else:
                    del pair_count[p]
            if verbose and (len(tok.merges) <= 10 or len(tok.merges) % 100 == 0):
                print(f"merge {len(tok.merges)}/{vocab_size - 256}: {pair} -> {new_id} "
                      f"{tok.vocab[new_id].decode('utf-8', 'replace')!r} ({-neg} occurrences)")
        if verbose and len(tok.merges) < vocab_size - 256:
            print(f"stopped early after {len(tok.merges)} merges: no pairs left to merge")
        tok.ranks = {p: 256 + k for k, p in enumerate(tok.merges)}
        return tok

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8", "surrogatepass"))
        while len(ids) >= 2:  # apply the earliest-learned merge present, until none applies
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, 1 << 62))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, self.ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> ids: split into chunks, then merge bytes inside each chunk by merge rank."""
        out: list[int] = []
        cache = self._cache
        for chunk in self.pattern.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                ids = self._encode_chunk(chunk)
                if len(cache) < 200_000:
                    cache[chunk] = ids
            out.extend(ids)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; invalid UTF-8 byte sequences become U+FFFD."""
        ids = _as_ids(ids)
        _check_ids(ids, self.vocab_size)
        data = b"".join(self.vocab[i] for i in ids)
        try:
            return data.decode("utf-8", "surrogatepass")  # exact inverse of encode
        except UnicodeDecodeError:
            return data.decode("utf-8", "replace")

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Each token's bytes decoded for display (a partial UTF-8 character shows as U+FFFD)."""
        ids = _as_ids(ids)
        _check_ids(ids, self.vocab_size)
        return [self.vocab[i].decode("utf-8", "replace") for i in ids]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bpe", "pattern": self.pattern.pattern, "merges": [list(m) for m in self.merges]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BPETokenizer":
        merges = d.get("merges")
        if d.get("type") != "bpe" or not isinstance(merges, list):
            raise ValueError("not a BPE tokenizer: expected {'type': 'bpe', 'merges': [[a, b], ...]}")
        if any(not isinstance(m, list) or len(m) != 2 or not all(type(x) is int for x in m) for m in merges):
            raise ValueError("BPE merges must be a list of [int, int] pairs")
        return cls([tuple(m) for m in merges], pattern=d.get("pattern", GPT2_SPLIT))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as JSON (atomically); read it back with :func:`load_tokenizer`."""
        _save_json(self.to_dict(), path)


Tokenizer = CharTokenizer | BPETokenizer
_TYPES: dict[str, type] = {"char": CharTokenizer, "bpe": BPETokenizer}


def load_tokenizer(path_or_dict: str | Path | dict[str, Any]) -> Tokenizer:
    """Read a tokenizer saved by ``save`` (or its ``to_dict``): a CharTokenizer or a BPETokenizer.

    A missing file raises ``FileNotFoundError``; a file that is not a valid tokenizer raises a
    ``ValueError`` naming the file and the problem.
    """
    if isinstance(path_or_dict, dict):
        where, d = "tokenizer dict", path_or_dict
    else:
        path = Path(path_or_dict)
        where = f"tokenizer file {str(path)!r}"
        if not path.is_file():
            raise FileNotFoundError(f"{where} does not exist")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{where} is not valid JSON: {e}") from e
    if not isinstance(d, dict) or d.get("type") not in _TYPES:
        kind = d.get("type") if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{where}: unknown tokenizer type {kind!r}; expected one of {sorted(_TYPES)}")
    try:
        return _TYPES[d["type"]].from_dict(d)
    except (ValueError, TypeError, re.error) as e:
        raise ValueError(f"{where} is malformed: {e}") from e
