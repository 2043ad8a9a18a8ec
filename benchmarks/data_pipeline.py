"""The data pipeline against the trainer that consumes it: tokens/s delivered by `Corpus.batch` (windows gathered
from the memory-mapped token store, a pure function of (seed, step)) vs tokens/s of the jitted train step, on the
tiny and small presets, in one run; plus tokenisation throughput of the token store build.

Corpus: the embedded documents as JSON lines (x --copies, so the store is not trivially small), tokenised with a
byte-level BPE trained here (`pangu_jax.tokenizer.train_bpe`, 1024 tokens) and with bytes. The pipeline must not be
the bottleneck: the goal is delivered >= 10x consumed.
Last line: JSON with per-preset pipeline_tokens_per_s, train_tokens_per_s and their ratio, and the store build's
tokens/s.
Usage: python benchmarks/data_pipeline.py [--presets=tiny,small] [--repeats=3] [--copies=8]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from absl import flags  # noqa: E402
from timing import time_train_step  # noqa: E402

import confspec  # noqa: E402
from pangu_jax.presets import load_preset  # noqa: E402
from pangu_jax.train.data import Corpus  # noqa: E402
from pangu_jax.train.sources import embedded_documents  # noqa: E402


def train_tokens_per_s(cfg, repeats: int) -> float:
  best, _ = time_train_step(cfg, repeats)
  return cfg.train.batch_size * cfg.train.seq_len / best


def pipeline_tokens_per_s(corpus, cfg, steps: int) -> float:
  t = cfg.train
  corpus.batch(t.seed, 0, t.batch_size)  # compile the window sampler
  t0 = time.perf_counter()
  for s in range(1, steps + 1):
    corpus.batch(t.seed, s, t.batch_size)
  return steps * t.batch_size * t.seq_len / (time.perf_counter() - t0)


def main(argv):
  del argv
  out = {}
  with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "corpus.jsonl")
    with open(src, "w") as f:
      for _ in range(_COPIES.value):
        for d in embedded_documents():
          f.write(json.dumps({"text": d}) + "\n")
    size = os.path.getsize(src)
    for name in _PRESETS.value:
      cfg = load_preset(name)
      cfg.data.update(path=src, tokenizer="bpe", bpe_vocab_size=1024)
      cfg.model.vocab_size = max(cfg.model.vocab_size, 1024)
      wd = os.path.join(tmp, name)
      t0 = time.perf_counter()
      corpus = Corpus(cfg.data, cfg.train.seq_len, workdir=wd)
      build_s = time.perf_counter() - t0
      n_tok = corpus.meta["train_tokens"] + corpus.meta["val_tokens"]
      t0 = time.perf_counter()
      Corpus(cfg.data, cfg.train.seq_len, workdir=wd)
      reuse_s = time.perf_counter() - t0
      pipe = pipeline_tokens_per_s(corpus, cfg, _STEPS.value)
      trainer = train_tokens_per_s(cfg, _REPEATS.value)
      out[name] = {"pipeline_tokens_per_s": pipe, "train_tokens_per_s": trainer, "ratio": pipe / trainer,
                   "store_build_s": build_s, "store_tokens": n_tok, "corpus_mb": size / 2**20,
                   "store_reuse_s": reuse_s}
      print(f"{name:>6}: pipeline {pipe:12.0f} tokens/s, trainer {trainer:9.0f} tokens/s, ratio {pipe / trainer:7.1f}"
            f"; store: {n_tok} tokens from {size / 2**20:.1f} MiB in {build_s:.1f}s (BPE training included), "
            f"reused in {reuse_s:.2f}s", file=sys.stderr, flush=True)
  out["min_ratio"] = min(out[n]["ratio"] for n in _PRESETS.value)
  print(json.dumps(out))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _PRESETS = flags.DEFINE_list("presets", ["tiny", "small"], "Presets to time (comma-separated).")
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed train steps (best of).", lower_bound=1)
  _STEPS = flags.DEFINE_integer("steps", 200, "Batches drawn to time the pipeline.", lower_bound=1)
  _COPIES = flags.DEFINE_integer("copies", 8, "Copies of the embedded corpus in the JSON lines file.", lower_bound=1)
  confspec.run(main)
