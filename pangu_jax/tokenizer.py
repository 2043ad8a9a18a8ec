"""Tokenisers: byte-level (the default: token = UTF-8 byte, vocab 256, nothing to train or download) and subword
tokenizers through Hugging Face `tokenizers` (a `tokenizer.json`: trained here as a byte-level BPE, or the one
that ships beside a Hugging Face checkpoint).

Our definitions: `data.tokenizer = "bpe"` with `data.tokenizer_path = ""` trains a byte-level BPE of
`data.bpe_vocab_size` tokens (the 256 byte symbols plus merges; no special tokens) on the training split's
documents and saves it as `<workdir>/tokenizer/tokenizer.json`, which a resumed run, `generate --workdir` and the
exporters reuse; with `data.tokenizer_path = F` the file F is loaded instead (any `tokenizers` JSON file). A
workdir's tokenizer is `<workdir>/tokenizer/tokenizer.json` when present, else the byte tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from confspec import ConfigError

WORKDIR_TOKENIZER = os.path.join("tokenizer", "tokenizer.json")


class ByteTokenizer:
  vocab_size = 256
  name = "byte"

  def encode(self, text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [self.encode(t) for t in texts]

  def decode(self, tokens) -> str:
    arr = np.asarray(tokens, dtype=np.int64)
    return bytes(int(t) for t in arr if 0 <= t < 256).decode("utf-8", errors="replace")

  def to_json(self) -> str:
    return "byte"


class HFTokenizer:
  """A `tokenizers.Tokenizer` with the interface above (`encode_batch` runs on every core, in Rust)."""

  name = "bpe"

  def __init__(self, tok, path: str = ""):
    self.tok, self.path = tok, path
    self.vocab_size = tok.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> np.ndarray:
    return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(e.ids, np.int32) for e in self.tok.encode_batch(texts, add_special_tokens=False)]

  def decode(self, tokens) -> str:
    return self.tok.decode([int(t) for t in np.asarray(tokens).reshape(-1)], skip_special_tokens=False)

  def to_json(self) -> str:
    return self.tok.to_str()

  def save(self, path: str) -> None:
    from runkit.atomic import atomic_write  # noqa: PLC0415

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, self.tok.to_str(pretty=True))


def load_tokenizer(path: str, what: str = "config.data.tokenizer_path") -> HFTokenizer:
  """A `tokenizer.json` file; one line when it is missing or not a tokenizer."""
  from tokenizers import Tokenizer  # noqa: PLC0415

  if not os.path.isfile(path):
    raise ConfigError(f"{what}: {path!r} is not a file; allowed: a tokenizers JSON file (tokenizer.json)")
  try:
    return HFTokenizer(Tokenizer.from_file(path), path)
  except Exception as e:  # tokenizers raises its own Exception type for a file it cannot parse
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"{what}: {path} is not a tokenizer ({reason})") from None


def train_bpe(documents: Iterable[str], vocab_size: int) -> HFTokenizer:
  """A byte-level BPE of `vocab_size` tokens trained on `documents` (an iterable, streamed)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415

  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                special_tokens=[], show_progress=False)
  tok.train_from_iterator(documents, trainer=trainer)
  return HFTokenizer(tok)


def workdir_tokenizer(workdir: str | None):
  """The tokenizer a workdir was trained (or imported) with: `<workdir>/tokenizer/tokenizer.json`, else bytes."""
  if workdir and os.path.exists(os.path.join(workdir, WORKDIR_TOKENIZER)):
    return load_tokenizer(os.path.join(workdir, WORKDIR_TOKENIZER), "--workdir")
  return ByteTokenizer()


def check_vocab(tokenizer, vocab_size: int) -> None:
  if tokenizer.vocab_size > vocab_size:
    where = f" ({tokenizer.path})" if getattr(tokenizer, "path", "") else ""
    raise ConfigError(f"config.model.vocab_size: {vocab_size} is smaller than the tokenizer's vocabulary "
                      f"({tokenizer.vocab_size} tokens{where}); allowed: >= {tokenizer.vocab_size}")
