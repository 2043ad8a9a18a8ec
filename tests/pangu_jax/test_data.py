"""Real text in: BPE through Hugging Face `tokenizers`, the corpus formats (JSON lines, Parquet, a `datasets`
save_to_disk directory, text), the on-disk token store and its reuse, the split by document, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from confspec import ConfigError
from pangu_jax.config import base_config
from pangu_jax.tokenizer import load_tokenizer, train_bpe
from pangu_jax.train import data as data_lib
from pangu_jax.train.data import Corpus
from pangu_jax.train.sources import embedded_documents

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = embedded_documents()[:24]  # real English prose and code, 24 documents


def write_jsonl(path, docs, field="text"):
  with open(path, "w") as f:
    for d in docs:
      f.write(json.dumps({field: d, "id": len(d)}) + "\n")
  return path


def data_cfg(path, **kw):
  cfg = base_config().data
  cfg.update(dict(path=str(path), val_fraction=0.25) | kw)
  return cfg


def test_bpe_is_the_tokenizers_library_and_round_trips():
  tok = train_bpe(DOCS, 600)
  assert tok.vocab_size == 600
  text = DOCS[3][:2000] + " \u00e9t\u00e9 \u4e2d\u6587 \U0001f600"
  assert tok.decode(tok.encode(text)) == text  # byte-level: any UTF-8 text round-trips
  assert len(tok.encode(DOCS[3])) < 0.6 * len(DOCS[3].encode())  # merges compress English prose


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
  """The same 24 documents as JSON lines, Parquet, a save_to_disk directory, and a directory of text files."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from datasets import Dataset

  d = tmp_path_factory.mktemp("corpora")
  out = {"jsonl": write_jsonl(d / "c.jsonl", DOCS)}
  pq.write_table(pa.table({"text": DOCS, "n": list(range(len(DOCS)))}), d / "c.parquet", row_group_size=5)
  out["parquet"] = d / "c.parquet"
  Dataset.from_dict({"text": DOCS}).save_to_disk(str(d / "hf"), num_shards=3)
  out["hf_disk"] = d / "hf"
  (d / "txt").mkdir()
  for i, doc in enumerate(DOCS):
    (d / "txt" / f"{i:03d}.txt").write_text(doc)
  out["text"] = d / "txt"
  return out


@pytest.mark.parametrize("fmt", ["parquet", "hf_disk", "text"])
def test_every_format_gives_the_jsonl_token_streams(corpora, fmt, tmp_path):
  """The same documents in another format: the same train and validation streams, byte and BPE."""
  ref = Corpus(data_cfg(corpora["jsonl"]), 32)
  got = Corpus(data_cfg(corpora[fmt]), 32)
  np.testing.assert_array_equal(np.asarray(got.train), np.asarray(ref.train))
  np.testing.assert_array_equal(np.asarray(got.val), np.asarray(ref.val))
  tok = tmp_path / "tok.json"
  train_bpe(DOCS, 500).save(str(tok))
  a = Corpus(data_cfg(corpora["jsonl"], tokenizer="bpe", tokenizer_path=str(tok)), 32)
  b = Corpus(data_cfg(corpora[fmt], tokenizer="bpe", tokenizer_path=str(tok)), 32)
  np.testing.assert_array_equal(np.asarray(a.train), np.asarray(b.train))
  assert a.tokenizer.decode(a.val) == "".join(DOCS[i] + "\n\n" for i in range(len(DOCS)) if i % 4 == 2)


def test_split_is_by_document(corpora):
  c = Corpus(data_cfg(corpora["jsonl"]), 32)
  val_text = c.tokenizer.decode(c.val)
  train_text = c.tokenizer.decode(c.train)
  for i, doc in enumerate(DOCS):
    held = i % 4 == 2
    assert (doc in val_text) == held and (doc in train_text) == (not held), i
  assert c.meta["val_docs"] == 6 and c.meta["train_docs"] == 18


def test_token_store_is_reused_and_rebuilt_on_change(tmp_path, monkeypatch):
  src = write_jsonl(tmp_path / "c.jsonl", DOCS)
  wd = tmp_path / "wd"
  cfg = data_cfg(src, tokenizer="bpe", bpe_vocab_size=400)
  first = Corpus(cfg, 32, workdir=str(wd))
  assert not first.reused and (wd / "tokenizer" / "tokenizer.json").exists()
  builds = []
  real = data_lib.build_store
  monkeypatch.setattr(data_lib, "build_store", lambda *a, **k: builds.append(1) or real(*a, **k))
  again = Corpus(cfg, 32, workdir=str(wd))
  assert again.reused and builds == []  # nothing tokenised the second time
  np.testing.assert_array_equal(np.asarray(again.train), np.asarray(first.train))
  write_jsonl(src, DOCS[:-1] + [DOCS[-1] + " changed"])  # an input changed: rebuilt
  assert not Corpus(cfg, 32, workdir=str(wd)).reused and builds == [1]
  other = tmp_path / "other.json"
  train_bpe(DOCS, 300).save(str(other))  # another tokenizer: rebuilt
  assert not Corpus(data_cfg(src, tokenizer="bpe", tokenizer_path=str(other)), 32, workdir=str(wd)).reused
  assert builds == [1, 1]


def _bad_inputs(tmp_path):
  bad_json = tmp_path / "bad.jsonl"
  bad_json.write_text(json.dumps({"text": DOCS[0]}) + "\n" + "{not json\n")
  no_field = write_jsonl(tmp_path / "nofield.jsonl", DOCS[:12], field="body")
  (tmp_path / "empty.jsonl").write_text("")
  short = write_jsonl(tmp_path / "short.jsonl", ["ab"] * 12)
  not_tok = tmp_path / "nottok.json"
  not_tok.write_text('{"hello": 1}')
  big = tmp_path / "big.json"
  train_bpe(DOCS, 700).save(str(big))
  ok = write_jsonl(tmp_path / "ok.jsonl", DOCS)
  return [
      (data_cfg(bad_json), {}, "bad.jsonl line 2 is not JSON"),
      (data_cfg(no_field), {}, "line 1 has no field 'text' (config.data.text_field)"),
      (data_cfg(tmp_path / "empty.jsonl"), {}, "holds no text (an empty corpus)"),
      (data_cfg(short), {}, "corpus too small"),
      (data_cfg(ok, format="csv"), {}, "config.data.format: 'csv' is not a known format"),
      (data_cfg(ok, tokenizer="bpe", tokenizer_path=str(not_tok)), {}, "nottok.json is not a tokenizer"),
      (data_cfg(ok, tokenizer="bpe", tokenizer_path=str(big)), {"vocab_size": 512},
       "config.model.vocab_size: 512 is smaller than the tokenizer's vocabulary (700 tokens"),
      (data_cfg(ok, tokenizer_path=str(big)), {}, "config.data.tokenizer_path: set, but config.data.tokenizer is"),
  ]


def test_bad_inputs_are_one_line(tmp_path):
  for cfg, kw, want in _bad_inputs(tmp_path):
    with pytest.raises(ConfigError) as e:
      Corpus(cfg, 32, **kw)
    assert want in str(e.value) and "\n" not in str(e.value), (want, str(e.value))
  with pytest.raises(ConfigError, match="is not a tokenizer"):
    load_tokenizer(str(tmp_path / "nottok.json"))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "hf_disk"])
def test_trainer_binary_on_parquet_and_save_to_disk(corpora, fmt, tmp_path):
  """The trainer binary on the other formats (BPE, two steps), then generate with the workdir's tokenizer."""
  wd = tmp_path / "wd"
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={wd}",
                         "--config.data.tokenizer=bpe", "--config.data.bpe_vocab_size=400",
                         f"--config.data.path={corpora[fmt]}", "--config.data.val_fraction=0.25",
                         "--config.model.vocab_size=400", "--config.model.num_layers=2",
                         "--config.model.hidden_size=64", "--config.train.steps=2", "--config.train.batch_size=4",
                         "--config.train.seq_len=32", "--config.train.ep_group_size=2", "--config.train.eval_every=2",
                         "--config.train.eval_batches=1", "--config.train.checkpoint_every=2", "--noprogress"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads((wd / "data" / "meta.json").read_text())["val_docs"] == 6
  gen = subprocess.run([sys.executable, "-m", "pangu_jax.generate", f"--workdir={wd}", "--max_tokens=4", "--json",
                        "--nowarmup"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert gen.returncode == 0, gen.stderr[-3000:]
  out = json.loads(gen.stdout.strip().splitlines()[-1])
  tok = load_tokenizer(str(wd / "tokenizer" / "tokenizer.json"))
  assert out["tokenizer"] == "bpe" and out["text"] == tok.decode(out["tokens"])


@pytest.mark.slow
def test_bpe_jsonl_run_trains_and_generates_readable_text(tmp_path):
  """The acceptance command (micro model): a BPE trained on a .jsonl corpus, saved in the workdir; generate decodes
  with the same tokenizer; a bad line in the corpus is one line on the command line."""
  src = write_jsonl(tmp_path / "c.jsonl", embedded_documents())
  wd = tmp_path / "wd"
  micro = ["--config.model.num_layers=2", "--config.model.hidden_size=64", "--config.model.vocab_size=512",
           "--config.train.steps=30", "--config.train.batch_size=4", "--config.train.seq_len=64",
           "--config.train.ep_group_size=2", "--config.train.eval_every=30", "--config.train.eval_batches=1",
           "--config.train.checkpoint_every=30", "--config.train.warmup_steps=2"]
  cmd = [sys.executable, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={wd}",
         "--config.data.tokenizer=bpe", "--config.data.bpe_vocab_size=512", f"--config.data.path={src}",
         "--noprogress", *micro]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  tok = load_tokenizer(str(wd / "tokenizer" / "tokenizer.json"))
  assert tok.vocab_size == 512
  gen = subprocess.run([sys.executable, "-m", "pangu_jax.generate", f"--workdir={wd}", "--prompt=The function ",
                        "--max_tokens=24", "--json", "--nowarmup"], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
  assert gen.returncode == 0, gen.stderr[-3000:]
  text = json.loads(gen.stdout.strip().splitlines()[-1])["text"]
  # decoded by the workdir's BPE: whole UTF-8 text (a byte decoder would print the token ids' low bytes)
  assert "\ufffd" not in text and all(c.isprintable() or c.isspace() for c in text)
  assert tok.decode(tok.encode(text)) == text
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"text": "a"}\n[1, 2\n')
  proc = subprocess.run(cmd[:-len(micro)] + [f"--config.data.path={bad}", f"--workdir={tmp_path / 'w2'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "bad.jsonl line 2 is not JSON" in proc.stderr
  assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
