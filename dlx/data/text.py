"""Characters of a text corpus for language modelling, offline: the corpus ships with Python itself.

The default corpus is the Python documentation's topic help (`pydoc_data.topics`, part of the standard
library: ~465 000 characters of English prose and code on Python 3.11), its topics joined in sorted order;
`path` reads any UTF-8 text file instead. The text is cut into three contiguous chunks, the first
`1 - val_fraction - test_fraction` for training, then validation, then test (as enwik8's 90/5/5), so no
window of the held-out text overlaps the training text, and the split does not depend on the seed.

The vocabulary is fixed (`VOCAB`: unknown, tab, newline and the 95 printable ASCII characters), so a
model's output size is known before any text is read and every corpus maps onto the same 98 ids.
Typographic quotes and dashes become their ASCII forms; any other character becomes the unknown id 0.

Each split is cut into windows of `length + 1` characters: inputs are the first `length`, targets the
last `length` (the next character at every position; teacher forcing). Training windows start every
`stride` characters; validation and test windows do not overlap, so every held-out character is
predicted exactly once (after 0 to length - 1 characters of context).
"""

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dlx.data.base import Splits, TensorData
from dlx.errors import ConfigError

UNKNOWN = "\ufffd"  # shown for id 0
VOCAB = UNKNOWN + "\t\n" + "".join(chr(c) for c in range(32, 127))  # 98 characters; id = position
ASCII_FORMS = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-",
                             "\u2014": "--", "\u2026": "...", "\u00a0": " "})
_IDS = {ch: i for i, ch in enumerate(VOCAB)}
CORPORA = ("pydoc_topics",)


def encode(text: str) -> Tensor:
    """Text -> ids int64 (N,); characters outside VOCAB (after the ASCII forms) -> 0."""
    text = text.translate(ASCII_FORMS)
    return torch.tensor([_IDS.get(ch, 0) for ch in text], dtype=torch.int64)


def decode(ids: Tensor | list[int]) -> str:
    """Ids (N,) -> text."""
    return "".join(VOCAB[i] for i in (ids.tolist() if isinstance(ids, Tensor) else ids))


def read_corpus(corpus: str, path: str | None) -> str:
    """The whole text: the file at `path`, else the named corpus of an installed package."""
    if path:
        file = Path(path).expanduser()
        if not file.is_file():
            raise ConfigError("data.path", path, "must be a UTF-8 text file (no such file)")
        return file.read_text(encoding="utf-8", errors="replace")
    if corpus not in CORPORA:
        raise ConfigError("data.corpus", corpus, f"choose one of {', '.join(CORPORA)} (or set data.path)")
    from pydoc_data.topics import topics  # the standard library's documentation topics (dict name -> text)

    return "".join(topics[k] for k in sorted(topics))


def windows(ids: Tensor, seq_len: int, stride: int) -> tuple[Tensor, Tensor]:
    """Inputs and next-character targets, both int64 (N, seq_len), from windows starting every `stride` ids."""
    w = ids.unfold(0, seq_len + 1, stride)  # (N, seq_len + 1), a view
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class CharText(TensorData):
    """Character windows of a text. Batches are (x (B, T) int64 ids, y (B, T) int64 next ids).

    Args:
        corpus: a corpus that ships with an installed package (`pydoc_topics`).
        path: a UTF-8 text file to read instead of `corpus` (null = use `corpus`).
        length: characters per window T (the length trained on with teacher forcing).
        stride: characters between the starts of training windows (null = length: each character once per
            epoch).
        val_fraction: share of the text (the chunk after the training text) held out for validation.
        test_fraction: share of the text (its end) held out for testing.
        The other arguments are `TensorData`'s; the image ones have no effect on text.
    """

    def __init__(
        self,
        *,
        corpus: str = "pydoc_topics",
        path: str | None = None,
        length: int = 128,
        stride: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        batch_size: int = 64,
        **kwargs: Any,
    ):
        super().__init__(batch_size=batch_size, val_fraction=val_fraction, **kwargs)
        if length < 1:
            raise ConfigError("data.length", length, "must be >= 1")
        stride = length if stride is None else stride
        if stride < 1:
            raise ConfigError("data.stride", stride, "must be >= 1")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 0.5:
                raise ConfigError(f"data.{key}", value, "must be in (0, 0.5)")
        self.corpus, self.path, self.length, self.stride = corpus, path, length, stride
        self.test_fraction = test_fraction

    def load(self) -> Splits:
        ids = encode(read_corpus(self.corpus, self.path))
        n = len(ids)
        n_test, n_val = int(n * self.test_fraction), int(n * self.val_fraction)
        cut_val, cut_test = n - n_val - n_test, n - n_test
        parts = {"train": ids[:cut_val], "val": ids[cut_val:cut_test], "test": ids[cut_test:]}
        short = [k for k, v in parts.items() if len(v) < self.length + 1]
        if short:
            raise ConfigError("data.length", self.length, f"leaves no whole window in the {short[0]} split "
                              f"({len(parts[short[0]])} characters of {n})")
        return Splits(train=windows(parts["train"], self.length, self.stride),
                      val=windows(parts["val"], self.length, self.length),
                      test=windows(parts["test"], self.length, self.length),
                      classes=list(VOCAB))

    def facts(self) -> dict[str, int]:
        x = self.splits["train"][0]  # (N, T)
        return {"vocab_size": len(VOCAB), "num_classes": len(VOCAB), "seq_len": x.shape[1]}
