"""Training data: documents (embedded corpus, text, JSON lines, Parquet, `save_to_disk`), a tokenizer, an
on-disk token store, packed windows.

Embedded corpus: the Python documentation topics that ship inside every CPython (`pydoc_data.topics`, ~465 KB
of English prose with code and grammar snippets, 79 documents), so training runs anywhere without downloads.
`config.data.path` points to a corpus in any format of `pangu_jax.train.sources`; tokenizers are
`pangu_jax.tokenizer` (byte by default; a trained or loaded `tokenizer.json`).

Split (our definition): by document. Document i (in corpus order) is held out for validation when
i mod n = n // 2, n = max(2, round(1 / val_fraction)); no document has tokens on both sides. The split does not
depend on the training seed. `data.max_bytes` caps the corpus: documents are read until that many UTF-8 bytes
(the last one cut there).

Token store (our definition): every document followed by a blank line ("\\n\\n", so packed documents stay
apart) is tokenised once, in batches (`tokenizers` encodes a batch on every core), into two flat int32 files,
train and validation, under `<workdir>/data/` with a `meta.json` holding a SHA-256 over the store version, the
split and format settings, every input file's name and bytes, and the tokenizer. The next run with the same hash
memory-maps the files instead of tokenising again; any change rebuilds the store (atomically: built beside it
and renamed). Without a workdir the store lives in a temporary directory for the life of the `Corpus`.

Batches: the batch of step s is B windows of seq_len + 1 tokens of the training stream at offsets drawn from
PRNG(seed, s), gathered from the memory-mapped file. A batch is therefore a pure function of (seed, step):
resuming at step s needs no saved data-loader state and reproduces the batches exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import jax
import numpy as np

from confspec import ConfigError
from pangu_jax import tokenizer as toklib
from pangu_jax.train import sources

STORE_VERSION = 2
SEPARATOR = "\n\n"
ENCODE_BATCH = 256
MAX_UNDECODABLE = 0.01  # a text document with more replacement characters than this is binary or not UTF-8


def val_every(val_fraction: float) -> int:
  return max(2, round(1 / val_fraction))


def split_documents(data_cfg) -> Iterator[tuple[str, bool]]:
  """(document text with its separator, held out for validation) in corpus order, `data.max_bytes` applied."""
  every = val_every(data_cfg.val_fraction)
  budget = data_cfg.max_bytes or None
  i = -1
  for doc in sources.iter_documents(data_cfg):
    if not doc:
      continue  # an empty file or record is no document
    i += 1
    if "\ufffd" in doc and doc.count("\ufffd") + doc.count("\x00") > MAX_UNDECODABLE * len(doc):
      raise ConfigError(f"config.data.path: document {i} of {data_cfg.path or 'the corpus'} is not UTF-8 text "
                        f"({(doc.count(chr(0xFFFD)) + doc.count(chr(0))) / len(doc):.0%} of its characters do not "
                        "decode); allowed: UTF-8 text")
    text = doc + SEPARATOR
    if budget is not None:
      raw = text.encode("utf-8")
      if len(raw) >= budget:
        yield raw[:budget].decode("utf-8", errors="ignore"), i % every == every // 2
        return
      budget -= len(raw)
    yield text, i % every == every // 2


def _content_hash(data_cfg, tokenizer) -> str:
  h = hashlib.sha256()
  h.update(json.dumps({"version": STORE_VERSION, "format": sources.detect_format(data_cfg.path, data_cfg.format)
                       if data_cfg.path else "embedded", "text_field": data_cfg.text_field,
                       "max_bytes": data_cfg.max_bytes, "val_fraction": data_cfg.val_fraction}).encode())
  files = sources.input_files(data_cfg)
  if not files:
    for doc in sources.embedded_documents():
      h.update(doc.encode("utf-8"))
  for f in files:
    h.update(os.path.relpath(f, data_cfg.path if os.path.isdir(data_cfg.path) else os.path.dirname(f)).encode())
    with open(f, "rb") as fh:
      for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
  h.update(tokenizer.to_json().encode("utf-8"))
  return h.hexdigest()


def build_store(data_cfg, tokenizer, store: str, digest: str, progress: bool = True, check=None) -> dict:
  """Tokenises the corpus into `store` (train.i32, val.i32, meta.json); atomic. `check(meta)` may reject the result
  (e.g. too small) before it replaces anything."""
  from tqdm import tqdm  # noqa: PLC0415

  tmp = f"{store.rstrip('/')}.tmp-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  # A bar only on a terminal (disable=None): a log file or a test's stderr gets no bar lines.
  bar = tqdm(desc="tokenise", unit="doc", disable=None if progress else True, mininterval=2, file=sys.stderr,
             leave=False)
  try:
    meta = _write_store(data_cfg, tokenizer, tmp, digest, bar)
    if check is not None:
      check(meta)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)  # a bad corpus leaves nothing behind in the workdir
    raise
  finally:
    bar.close()
  if os.path.exists(store):
    shutil.rmtree(store)
  os.replace(tmp, store)
  return meta


def _write_store(data_cfg, tokenizer, tmp: str, digest: str, bar) -> dict:
  counts = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0}
  with open(os.path.join(tmp, "train.i32"), "wb") as ft, open(os.path.join(tmp, "val.i32"), "wb") as fv:
    texts, held = [], []

    def flush():
      for ids, v in zip(tokenizer.encode_batch(texts), held):
        (fv if v else ft).write(np.asarray(ids, "<i4").tobytes())
        side = "val" if v else "train"
        counts[f"{side}_tokens"] += len(ids)
        counts[f"{side}_docs"] += 1
      bar.update(len(texts))
      texts.clear()
      held.clear()

    for text, v in split_documents(data_cfg):
      texts.append(text)
      held.append(v)
      if len(texts) == ENCODE_BATCH:
        flush()
    flush()
  meta = counts | {"hash": digest, "tokenizer": tokenizer.name, "vocab_size": tokenizer.vocab_size}
  with open(os.path.join(tmp, "meta.json"), "w") as f:
    json.dump(meta, f, indent=2)
  return meta


def _memmap(path: str) -> np.ndarray:
  if os.path.getsize(path) == 0:
    return np.zeros(0, np.int32)
  return np.memmap(path, dtype="<i4", mode="r")


def resolve_tokenizer(data_cfg, workdir: str | None, primary: bool = True, log=None):
  """The run's tokenizer (`pangu_jax.tokenizer`'s rules): byte; the file `data.tokenizer_path`; the workdir's
  saved one; or a BPE trained now on the training documents and saved in the workdir."""
  if data_cfg.tokenizer == "byte":
    if data_cfg.tokenizer_path:
      raise ConfigError("config.data.tokenizer_path: set, but config.data.tokenizer is 'byte'; allowed: "
                        "tokenizer='bpe' with a tokenizer_path, or no tokenizer_path")
    return toklib.ByteTokenizer()
  if data_cfg.tokenizer_path:
    return toklib.load_tokenizer(data_cfg.tokenizer_path)
  saved = os.path.join(workdir, toklib.WORKDIR_TOKENIZER) if workdir else None
  if saved and os.path.exists(saved):
    return toklib.load_tokenizer(saved, "--workdir")
  tok = toklib.train_bpe((t for t, v in split_documents(data_cfg) if not v), data_cfg.bpe_vocab_size)
  if saved and primary:
    tok.save(saved)
    tok.path = saved
  if log:  # said after the fact: a bad corpus stops the training with its own one line
    log(f"trained a byte-level BPE of {tok.vocab_size} tokens on the training documents"
        f"{f' (saved to {saved})' if saved and primary else ''}")
  return tok


def check_size(m: dict, data_cfg, seq_len: int) -> None:
  """One line when a store's corpus is empty, has too few documents for the split, or too few tokens."""
  docs = m["train_docs"] + m["val_docs"]
  where = data_cfg.path or "the embedded corpus"
  if docs == 0 or m["train_tokens"] + m["val_tokens"] == 0:
    raise ConfigError(f"config.data.path: {where} holds no text (an empty corpus)")
  if m["val_docs"] == 0 or m["train_docs"] == 0:
    every = val_every(data_cfg.val_fraction)
    raise ConfigError(f"config.data.path: {where} holds {docs} document(s); the validation split is by document "
                      f"(document i is held out when i mod {every} = {every // 2}) and needs at least "
                      f"{every // 2 + 1}; put documents in separate files, use .jsonl, or raise "
                      "data.val_fraction")
  need_train, need_val = 2 * (seq_len + 1), seq_len + 1
  if m["train_tokens"] < need_train or m["val_tokens"] < need_val:
    capped = f" (data.max_bytes={data_cfg.max_bytes})" if data_cfg.max_bytes else ""
    raise ConfigError(f"config.data.path: corpus too small{capped}: {m['train_tokens']} training and "
                      f"{m['val_tokens']} validation tokens; train.seq_len={seq_len} needs at least {need_train} "
                      f"and {need_val}")


class Corpus:
  """Train and validation token streams (memory-mapped from the token store) plus the deterministic batch
  function. `workdir`: where the store and a trained tokenizer live (None: a temporary store)."""

  def __init__(self, data_cfg, seq_len: int, workdir: str | None = None, progress: bool = False, log=None,
               vocab_size: int | None = None):
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    primary = jax.process_index() == 0
    self.tokenizer = resolve_tokenizer(data_cfg, workdir, primary, log)
    if vocab_size is not None:
      toklib.check_vocab(self.tokenizer, vocab_size)
    digest = _content_hash(data_cfg, self.tokenizer)
    if workdir:
      self._tmp = None
      store = os.path.join(workdir, "data" if primary else f"data.p{jax.process_index()}")
    else:
      self._tmp = tempfile.TemporaryDirectory(prefix="pangu_store_")
      store = os.path.join(self._tmp.name, "data")
    meta = None
    if os.path.exists(os.path.join(store, "meta.json")):
      with open(os.path.join(store, "meta.json")) as f:
        meta = json.load(f)
      if meta.get("hash") != digest:
        meta = None
    self.reused = meta is not None
    check = lambda m: check_size(m, data_cfg, seq_len)
    if meta is None:
      meta = build_store(data_cfg, self.tokenizer, store, digest, progress, check=check)
    check(meta)
    self.meta, self.store = meta, store
    self.train = _memmap(os.path.join(store, "train.i32"))
    self.val = _memmap(os.path.join(store, "val.i32"))
    self.seq_len = seq_len

  def batch(self, seed: int, step: int, batch_size: int) -> np.ndarray:
    """(B, seq_len + 1) int32 windows for `step`; a pure function of (seed, step)."""
    width = self.seq_len + 1
    starts = np.asarray(_starts(jax.random.fold_in(jax.random.key(seed), step), batch_size,
                                len(self.train) - width + 1))
    return np.asarray(self.train[starts[:, None] + np.arange(width)[None, :]], np.int32)

  def val_batches(self, batch_size: int, num_batches: int) -> list[np.ndarray]:
    """Fixed, non-overlapping validation windows (at most num_batches batches)."""
    w = self.seq_len + 1
    n = min(len(self.val) // w, batch_size * num_batches)
    n -= n % batch_size
    if n == 0:
      n = len(self.val) // w
      batch_size = n
    wins = np.asarray(self.val[: n * w], np.int32).reshape(n, w)
    return [wins[i : i + batch_size] for i in range(0, n, batch_size)]


def _starts_impl(key, batch_size, high):
  return jax.random.randint(key, (batch_size,), 0, high)


_starts = jax.jit(_starts_impl, static_argnums=(1, 2))


def bigram_val_loss(train: np.ndarray, val_windows: list[np.ndarray], vocab: int = 256) -> float | None:
  """Validation loss (nats/token) of an additive-smoothed bigram model fitted on the train stream (None above
  a 4096-token vocabulary: the count table would not fit).

  The smoothing constant is the best of a small grid on the validation data itself, so the baseline is, if
  anything, flattered.
  """
  if vocab > 4096:
    return None
  train = np.asarray(train)
  counts = np.zeros((vocab, vocab), np.float64)
  np.add.at(counts, (train[:-1], train[1:]), 1.0)
  prev = np.concatenate([w[:, :-1].reshape(-1) for w in val_windows])
  nxt = np.concatenate([w[:, 1:].reshape(-1) for w in val_windows])
  best = np.inf
  for k in (0.01, 0.03, 0.1, 0.3, 1.0):
    probs = (counts + k) / (counts.sum(1, keepdims=True) + k * vocab)
    best = min(best, float(-np.mean(np.log(probs[prev, nxt]))))
  return best
