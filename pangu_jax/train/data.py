"""Training data: an embedded English corpus (or user text), byte tokens, packed windows.

Embedded corpus: the Python documentation topics that ship inside every CPython
(`pydoc_data.topics`, ~465 KB of English prose with code and grammar snippets),
so training runs anywhere without downloads. `config.data.path` points to any text
file or directory (all `*.txt`, `*.md`, `*.rst`, `*.py` files under it, sorted).

Split (our definition): the token stream is cut into 2 KiB chunks and every n-th
chunk (n = round(1 / val_fraction)) is held out for validation. The split does
not depend on the training seed, and interleaving keeps both splits from the same
mixture of topics.

Batches: documents are concatenated (packed) with a blank line between them;
the batch of step s is B windows of seq_len + 1 tokens at offsets drawn from
PRNG(seed, s). A batch is therefore a pure function of (seed, step): resuming at
step s needs no saved data-loader state and reproduces the batches exactly.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from confspec import ConfigError
from pangu_jax.tokenizer import ByteTokenizer

CHUNK = 2048
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")
MAX_UNDECODABLE = 0.01  # a text file with more replacement characters than this is binary or not UTF-8: rejected


def embedded_documents() -> list[str]:
  import pydoc_data.topics  # noqa: PLC0415 (stdlib; imported lazily)

  return [pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)]


def read_documents(path: str) -> list[str]:
  """Documents from a text file, or from the text files under a directory."""
  if not path:
    return embedded_documents()
  if os.path.isfile(path):
    files = [path]
  elif os.path.isdir(path):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(TEXT_SUFFIXES))
  else:
    raise ConfigError(f"config.data.path: {path!r} does not exist; allowed: a text file, a directory, or '' (embedded)")
  if not files:
    raise ConfigError(f"config.data.path: no {'/'.join(TEXT_SUFFIXES)} files under {path!r}")
  docs = []
  for f in files:
    with open(f, "rb") as fh:
      raw = fh.read()
    text = raw.decode("utf-8", errors="replace")
    bad = text.count("\ufffd") + text.count("\x00")
    if raw and bad > MAX_UNDECODABLE * len(text):
      raise ConfigError(f"config.data.path: {f} is not UTF-8 text ({bad / len(text):.0%} of its characters do not "
                        "decode); allowed: UTF-8 text files")
    docs.append(text)
  return docs


def _split_sizes(n: int, every: int) -> tuple[int, int]:
  """(train, validation) tokens of an `n`-token stream split as `Corpus` splits it (chunk k % every == every // 2
  goes to validation)."""
  full, rest = divmod(n, CHUNK)
  val_full = sum(1 for k in range(full) if k % every == every // 2)
  val = val_full * CHUNK + (rest if full % every == every // 2 else 0)
  return n - val, val


def min_corpus_tokens(seq_len: int, val_fraction: float) -> int:
  """The fewest tokens a corpus needs for `seq_len` (two training windows and one validation window)."""
  every = max(2, round(1 / val_fraction))
  fits = lambda n: (lambda tv: tv[0] >= 2 * (seq_len + 1) and tv[1] >= seq_len + 1)(_split_sizes(n, every))
  lo, hi = 1, CHUNK * every
  while not fits(hi):
    hi *= 2
  while lo < hi:  # both sizes grow with n
    mid = (lo + hi) // 2
    lo, hi = (lo, mid) if fits(mid) else (mid + 1, hi)
  return lo


class Corpus:
  """Train and validation token streams plus the deterministic batch function."""

  def __init__(self, data_cfg, seq_len: int):
    docs = read_documents(data_cfg.path)
    if data_cfg.tokenizer != "byte":
      raise ConfigError("config.data.tokenizer: 'bpe' is not available yet; allowed: 'byte'")
    self.tokenizer = ByteTokenizer()
    stream = self.tokenizer.encode("\n\n".join(docs))
    if data_cfg.max_bytes:
      stream = stream[: data_cfg.max_bytes]
    every = max(2, round(1 / data_cfg.val_fraction))
    need = min_corpus_tokens(seq_len, data_cfg.val_fraction)
    if len(stream) < need:
      capped = f" (data.max_bytes={data_cfg.max_bytes})" if data_cfg.max_bytes else ""
      raise ConfigError(f"config.data.path: corpus too small: {len(stream)} tokens{capped}, and train.seq_len="
                        f"{seq_len} with data.val_fraction={data_cfg.val_fraction} needs at least {need}")
    n_chunks = -(-len(stream) // CHUNK)
    is_val = (np.arange(n_chunks) % every) == every // 2
    chunks = [stream[i * CHUNK : (i + 1) * CHUNK] for i in range(n_chunks)]
    self.train = np.concatenate([c for c, v in zip(chunks, is_val) if not v]).astype(np.int32)
    self.val = np.concatenate([c for c, v in zip(chunks, is_val) if v] or [np.zeros(0, np.int32)]).astype(np.int32)
    self.seq_len = seq_len
    assert len(self.train) >= 2 * (seq_len + 1) and len(self.val) >= seq_len + 1, (len(self.train), len(self.val))
    self._train_dev = jnp.asarray(self.train)

  def batch(self, seed: int, step: int, batch_size: int) -> jax.Array:
    """(B, seq_len + 1) int32 windows for `step`; a pure function of (seed, step)."""
    return _windows(self._train_dev, jax.random.fold_in(jax.random.key(seed), step), batch_size, self.seq_len + 1)

  def val_batches(self, batch_size: int, num_batches: int) -> list[np.ndarray]:
    """Fixed, non-overlapping validation windows (at most num_batches batches)."""
    w = self.seq_len + 1
    n = min(len(self.val) // w, batch_size * num_batches)
    n -= n % batch_size
    if n == 0:
      n = len(self.val) // w
      batch_size = n
    wins = self.val[: n * w].reshape(n, w)
    return [wins[i : i + batch_size] for i in range(0, n, batch_size)]


def _windows_impl(stream, key, batch_size, width):
  starts = jax.random.randint(key, (batch_size,), 0, stream.shape[0] - width + 1)
  idx = starts[:, None] + jnp.arange(width)[None, :]
  return jnp.take(stream, idx, axis=0)


_windows = jax.jit(_windows_impl, static_argnums=(2, 3))


def bigram_val_loss(train: np.ndarray, val_windows: list[np.ndarray], vocab: int = 256) -> float:
  """Validation loss (nats/token) of an additive-smoothed bigram model fitted on the train stream.

  The smoothing constant is the best of a small grid on the validation data itself, so the baseline is, if
  anything, flattered.
  """
  counts = np.zeros((vocab, vocab), np.float64)
  np.add.at(counts, (train[:-1], train[1:]), 1.0)
  prev = np.concatenate([w[:, :-1].reshape(-1) for w in val_windows])
  nxt = np.concatenate([w[:, 1:].reshape(-1) for w in val_windows])
  best = np.inf
  for k in (0.01, 0.03, 0.1, 0.3, 1.0):
    probs = (counts + k) / (counts.sum(1, keepdims=True) + k * vocab)
    best = min(best, float(-np.mean(np.log(probs[prev, nxt]))))
  return best
