"""Built-in text tokenizer: hashed word n-grams, so text works offline with no vocabulary file.

Ids are a pure function of the text and the three settings (crc32, never Python's salted `hash`),
so a model trained in one process reads the same ids in any other. Id 0 is reserved for padding.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass
from typing import Any

# Word tokens: runs of letters/digits (any script), keeping inner apostrophes ("patient's").
WORD_RE = re.compile(r"\w+(?:'\w+)*")


def words(text: str) -> list[str]:
    """Lowercased word tokens; validation uses it to refuse notes without any word."""
    return WORD_RE.findall(text.lower())


@dataclass(frozen=True)
class HashTokenizer:
    """Word unigrams (and bigrams, ... up to `ngrams`) hashed into `n_buckets` ids `1..n_buckets`.

    Order: for each word, its unigram id then the n-grams ending at it, so truncation to
    `max_tokens` keeps the start of the note.
    """

    n_buckets: int = 4096
    ngrams: int = 2
    max_tokens: int = 256

    def __post_init__(self) -> None:
        for name in ("n_buckets", "ngrams", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HashTokenizer.{name} must be a positive int, got {value!r}")

    @property
    def vocab_size(self) -> int:
        """Size of an embedding table for these ids (buckets plus the padding id 0)."""
        return self.n_buckets + 1

    def _bucket(self, gram: str) -> int:
        return zlib.crc32(gram.encode("utf-8")) % self.n_buckets + 1

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text must be a str, got {type(text).__name__}")
        toks = words(text)
        ids: list[int] = []
        for i in range(len(toks)):
            for n in range(1, self.ngrams + 1):
                if i + 1 < n:
                    break
                # The order n is part of the hashed key: n-grams of different orders are distinct strings.
                ids.append(self._bucket(f"{n}\x1f" + "\x1f".join(toks[i + 1 - n : i + 1])))
                if len(ids) >= self.max_tokens:
                    return ids
        return ids

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HashTokenizer:
        return cls(**d)
