"""Trainer: data determinism, losses against closed forms, optimiser mask, NaN guard, checkpoints, exact resume."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, small_model_cfg

from confspec import ConfigError
from pangu_jax.config import base_config
from pangu_jax.model.moe import MoeStats
from pangu_jax.train import losses
from pangu_jax.train.data import Corpus, bigram_val_loss
from pangu_jax.train.loop import train
from pangu_jax.train.optim import decay_mask
from runkit.checkpoint import Checkpointer
from runkit.metrics import read_metrics

MICRO = dict(num_layers=2, num_dense_layers=1, hidden_size=32, num_heads=2, q_lora_rank=16, kv_lora_rank=16,
             qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_routed_experts=4, top_k=2,
             expert_ffn_dim=16, dense_ffn_dim=32)


def micro_config(**train):
  cfg = base_config()
  cfg.model.update(MICRO)
  cfg.train.update(steps=12, batch_size=4, seq_len=32, eval_every=6, eval_batches=1, checkpoint_every=3,
                   log_every=1, warmup_steps=2, ep_group_size=2)
  cfg.train.update(train)
  return cfg


def micro_overrides(**train):
  flat = {f"model.{k}": v for k, v in MICRO.items()}
  flat.update({"train.steps": 12, "train.batch_size": 4, "train.seq_len": 32, "train.eval_every": 6,
               "train.eval_batches": 1, "train.checkpoint_every": 3, "train.log_every": 1,
               "train.warmup_steps": 2, "train.ep_group_size": 2})
  flat.update({f"train.{k}": v for k, v in train.items()})
  return [f"--config.{k}={v}" for k, v in flat.items()]


# ----------------------------------------------------------------------------- data


def test_batches_are_a_pure_function_of_seed_and_step():
  cfg = base_config()
  c1, c2 = Corpus(cfg.data, 64), Corpus(cfg.data, 64)
  np.testing.assert_array_equal(c1.batch(0, 17, 4), c2.batch(0, 17, 4))
  assert not np.array_equal(c1.batch(0, 17, 4), c1.batch(0, 18, 4))
  assert not np.array_equal(c1.batch(0, 17, 4), c1.batch(1, 17, 4))
  assert c1.batch(0, 0, 4).shape == (4, 65)


def test_split_is_disjoint_and_english():
  corpus = Corpus(base_config().data, 64)
  text = corpus.tokenizer.decode(corpus.train[:20000])
  assert " the " in text and len(corpus.val) > 0.03 * (len(corpus.train) + len(corpus.val))
  # no 2 KiB validation chunk appears verbatim in the training stream
  val_chunk = corpus.val[:2048].tobytes()
  assert val_chunk not in corpus.train.tobytes()


def test_user_text_file_and_bad_path(tmp_path):
  for name in ("a.txt", "b.txt"):  # two documents: document 1 is held out (val_fraction 0.5)
    (tmp_path / name).write_text("hello world. " * 2000)
  cfg = base_config().data
  cfg.path, cfg.val_fraction = str(tmp_path), 0.5
  corpus = Corpus(cfg, 16)
  assert corpus.tokenizer.decode(corpus.train[:12]) == "hello world."
  cfg.path = str(tmp_path / "missing")
  with pytest.raises(ConfigError, match="config.data.path"):
    Corpus(cfg, 16)


def test_bad_data_files_are_one_line(tmp_path):
  """An empty file, a binary file, one document, and a too-small corpus: one ConfigError line each that says what
  is needed (issue 25 items 9-10: an empty file raised numpy's 'need at least one array to concatenate', a binary
  file trained on replacement characters without a word, and "corpus too small" did not say how much is needed)."""
  cfg = base_config().data
  (tmp_path / "empty.txt").write_bytes(b"")
  cfg.path = str(tmp_path / "empty.txt")
  with pytest.raises(ConfigError, match="holds no text"):
    Corpus(cfg, 16)
  (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
  cfg.path = str(tmp_path / "random.bin")
  with pytest.raises(ConfigError, match="random.bin is not UTF-8 text"):
    Corpus(cfg, 16)
  (tmp_path / "one.txt").write_text("hello world. " * 100)
  cfg.path = str(tmp_path / "one.txt")
  with pytest.raises(ConfigError, match=r"holds 1 document\(s\); the validation split is by document .* needs at "
                     r"least 11"):
    Corpus(cfg, 16)
  small = tmp_path / "small.jsonl"
  cfg.path, cfg.val_fraction = str(small), 0.5
  small.write_text(json.dumps({"text": "x" * 30}) + "\n" + json.dumps({"text": "y" * 10}) + "\n")
  with pytest.raises(ConfigError) as e:
    Corpus(cfg, 16)
  assert "corpus too small: 32 training and 12 validation tokens; train.seq_len=16 needs at least 34 and 17" in \
      str(e.value)
  small.write_text(json.dumps({"text": "x" * 32}) + "\n" + json.dumps({"text": "y" * 15}) + "\n")
  Corpus(cfg, 16)  # exactly the minimum is enough (each document gains its two-byte separator)
  (tmp_path / "accents.txt").write_bytes(("h\u00e9llo w\u00f6rld. " * 3000).encode() + b"\xff")  # one bad byte
  (tmp_path / "accents2.txt").write_text("h\u00e9llo w\u00f6rld. " * 3000)
  cfg.path, cfg.val_fraction = str(tmp_path), 0.5
  for f in ("empty.txt", "random.bin", "one.txt", "small.jsonl"):
    (tmp_path / f).unlink()
  Corpus(cfg, 16)


def test_bigram_baseline_against_closed_form():
  # a stream alternating 0,1: the bigram model predicts it almost surely
  train_stream = np.tile([0, 1], 1000).astype(np.int32)
  val = [np.tile([0, 1], 8).astype(np.int32)[None]]
  assert bigram_val_loss(train_stream, val, vocab=4) < 0.01


# ----------------------------------------------------------------------------- losses


def _stats(counts, scores):
  scores = jnp.asarray(scores, jnp.float32)
  zeros = jnp.zeros(scores.shape[:-1] + (1,))
  return MoeStats(counts=jnp.asarray(counts, jnp.int32), scores=scores, logits=jnp.log(scores),
                  topk_idx=zeros.astype(jnp.int32), topk_weights=zeros, dropped=jnp.zeros((1,), jnp.int32))


def test_balance_loss_is_one_under_perfect_balance():
  layers, b, s, e, k = 1, 4, 8, 4, 2
  counts = np.full((layers, b, e), s * k // e)
  scores = np.full((layers, b, s, e), 0.3)
  for g in ("micro_batch", "ep_group", "global_batch"):
    np.testing.assert_allclose(losses.balance_loss(_stats(counts, scores), k, g, 2), 1.0, rtol=1e-6)


def test_balance_loss_granularity():
  """Each sequence sends everything to one expert, but the batch as a whole is balanced:
  the micro-batch loss sees the imbalance, the global-batch loss does not, the EP group sits between."""
  b, s, e, k = 4, 8, 4, 1
  counts = np.zeros((1, b, e))
  scores = np.full((1, b, s, e), 0.01)
  for i in range(b):
    counts[0, i, i] = s
    scores[0, i, :, i] = 0.97
  st = _stats(counts, scores)
  micro = float(losses.balance_loss(st, k, "micro_batch", 2))
  ep = float(losses.balance_loss(st, k, "ep_group", 2))
  glob = float(losses.balance_loss(st, k, "global_batch", 2))
  # closed forms: micro: f = E on one expert with P = 0.97 -> 4 * 0.97; global: f = 1 everywhere -> sum P = 1
  np.testing.assert_allclose(micro, e * 0.97, rtol=1e-5)
  np.testing.assert_allclose(glob, 1.0, rtol=1e-5)
  # EP group of 2 sequences: f = 2 on its two experts, each with P = (0.97 + 0.01) / 2
  np.testing.assert_allclose(ep, 2 * 2 * (0.97 + 0.01) / 2, rtol=1e-5)
  assert micro > ep > glob


def test_mtp_loss_matches_a_naive_loop():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 7, 5)).astype(np.float32)  # depth 2, B 3, S 7, V 5
  targets = rng.integers(0, 5, size=(3, 7))
  want = []
  for j in range(2):
    nll = []
    for bi in range(3):
      for i in range(7 - j - 1):
        lp = logits[j, bi, i] - np.log(np.exp(logits[j, bi, i]).sum())
        nll.append(-lp[targets[bi, i + j + 1]])
    want.append(np.mean(nll))
  np.testing.assert_allclose(losses.mtp_loss(jnp.asarray(logits), jnp.asarray(targets)), np.mean(want), rtol=1e-5)


def test_weight_decay_mask_excludes_norms_and_router_bias():
  from pangu_jax.model import transformer

  params = transformer.init_params(jax.random.key(0), small_model_cfg())
  mask = decay_mask(params)
  assert mask["moe_layers"]["moe"]["experts"]["w_in"] and mask["head"] and mask["embed"]
  assert not mask["moe_layers"]["attn_norm"] and not mask["final_norm"]
  assert not mask["moe_layers"]["moe"]["router_bias"] and not mask["moe_layers"]["attn"]["kv_a_norm"]


# ----------------------------------------------------------------------------- the loop


def test_training_reduces_loss_and_writes_metrics(tmp_path):
  summary = train(micro_config(steps=30, learning_rate=3e-3, eval_every=30), str(tmp_path), progress=False)
  assert summary["status"] == "completed"
  recs = read_metrics(str(tmp_path))
  train_lines = [r for r in recs if "loss" in r]
  assert {"step", "loss", "tokens_per_s", "mfu", "grad_norm", "lr", "aux_loss", "mtp_loss",
          "expert_load_imbalance", "dropped_fraction"} <= set(train_lines[-1])
  assert train_lines[-1]["ce"] < train_lines[0]["ce"] - 0.5
  assert 0 < train_lines[-1]["mfu"] < 1
  assert any("val_loss" in r for r in recs) and "bigram_val_loss" in recs[0]
  assert os.path.isdir(tmp_path / "tb")


def test_nan_is_skipped_and_counted(tmp_path):
  summary = train(micro_config(steps=8), str(tmp_path), inject_nan_at={4}, progress=False)
  assert summary["status"] == "completed" and summary["skipped_steps"] == 1
  recs = {r["step"]: r for r in read_metrics(str(tmp_path)) if "loss" in r}
  assert recs[5]["skipped_steps"] == 1 and recs[4]["skipped_steps"] == 0
  # the skipped step left the weights alone: steps 5 and 6 of a run without the NaN differ from these
  ref_dir = tmp_path / "ref"
  train(micro_config(steps=8), str(ref_dir), progress=False)
  ref = {r["step"]: r for r in read_metrics(str(ref_dir)) if "loss" in r}
  assert recs[4]["loss"] == ref[4]["loss"] and recs[6]["loss"] != ref[6]["loss"]


def test_consecutive_nans_stop_the_run_with_last_good_checkpoint(tmp_path):
  summary = train(micro_config(steps=12, max_consecutive_skips=3), str(tmp_path), inject_nan_at={7, 8, 9, 10},
                  progress=False)
  assert summary["status"].startswith("stopped: 3 consecutive non-finite")
  assert "last good checkpoint: step 6" in summary["status"]
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  assert ckpt.steps()[-1] == 6  # checkpoints every 3 steps; nothing written after the NaNs began
  ckpt.close()


def test_non_finite_parameters_are_never_saved(tmp_path):
  """b2 = 1 (inside the schema) makes Adam's bias correction divide by zero: the first update turns every parameter
  into NaN while its loss and gradient norm are finite. No checkpoint may hold such a state, and the stop line says
  "kept" only when a checkpoint exists (issue 25 item 4)."""
  lines = []
  summary = train(micro_config(steps=6, b2=1.0, checkpoint_every=1, max_consecutive_skips=3), str(tmp_path),
                  progress=False, log=lines.append)
  assert summary["status"].startswith("stopped:") and "not finite" in summary["status"], summary
  assert "kept" not in summary["status"] and "no checkpoint" in summary["status"]
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3, read_only=True)
  assert ckpt.steps() == []
  ckpt.close()


def test_corrupt_latest_checkpoint_falls_back_with_one_line(tmp_path):
  train(micro_config(steps=6), str(tmp_path), progress=False)
  step_dir = tmp_path / "checkpoints" / "6"
  victim = max((os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs if "/d/" in os.path.join(d, f)),
               key=os.path.getsize)
  with open(victim, "r+b") as fh:
    fh.truncate(os.path.getsize(victim) // 2)
  lines = []
  cfg = micro_config(steps=9)
  summary = train(cfg, str(tmp_path), progress=False, log=lines.append)
  msgs = [ln for ln in lines if "corrupt" in ln]
  assert len(msgs) == 1 and "step 6" in msgs[0] and "falling back to step 3" in msgs[0] and "\n" not in msgs[0]
  assert "resuming from step 3" in lines
  assert summary["status"] == "completed"
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
  assert ckpt.steps() == [3, 6, 9]  # the corrupt step was moved aside and written again: no save was refused
  ckpt.close()
  assert [p.name.split(".")[0] for p in (tmp_path / "checkpoints.quarantine").iterdir()] == ["6"]  # kept, not deleted


def test_config_mismatch_on_resume_is_one_line_and_deletes_nothing(tmp_path):
  """Resuming a trained run with a model that does not fit its checkpoints stops with one line naming the first
  differing weight; every step and the run's config.json stay as they were."""
  train(micro_config(steps=3), str(tmp_path), progress=False)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "checkpoints" in p.parts}
  config_before = (tmp_path / "config.json").read_bytes()
  cfg = micro_config(steps=6)
  cfg.model.hidden_size = 48
  with pytest.raises(ConfigError) as e:
    train(cfg, str(tmp_path), progress=False)
  msg = str(e.value)
  assert "does not match this config" in msg and "['params']" in msg and "\n" not in msg
  assert ", 32" in msg.split("in the checkpoint")[0] and ", 48" in msg.split("in the checkpoint")[1]
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "checkpoints" in p.parts}
  assert after == before and not (tmp_path / "checkpoints.quarantine").exists()
  assert (tmp_path / "config.json").read_bytes() == config_before


def test_partial_checkpoint_directory_is_ignored(tmp_path):
  """A kill -9 during a checkpoint write leaves orbax's temporary directory; resume ignores it."""
  train(micro_config(steps=3), str(tmp_path), progress=False)
  partial = tmp_path / "checkpoints" / "6.orbax-checkpoint-tmp-1234567"
  shutil.copytree(tmp_path / "checkpoints" / "3", partial)
  lines = []
  train(micro_config(steps=6), str(tmp_path), progress=False, log=lines.append)
  assert "resuming from step 3" in lines


def _train_cmd(workdir, *extra, **train_overrides):
  return [sys.executable, "-m", "pangu_jax.train", "--config=configs/pangu/tiny.py", f"--workdir={workdir}",
          "--progress=false", *micro_overrides(**train_overrides), *extra]


@pytest.mark.slow
def test_sigterm_saves_and_exits_143_with_an_unwritable_home(tmp_path):
  """SIGTERM: a checkpoint at the current step, then exit 128 + 15 (not 0: a scheduler must see the stop); a home
  directory where nothing can be written (the CPU peak-FLOP/s cache lives there) does not stop the trainer."""
  env = dict(os.environ, HOME="/proc")  # nothing can be created under /proc, not even by root
  proc = subprocess.Popen(_train_cmd(tmp_path, steps=100_000, checkpoint_every=100_000), cwd=REPO, env=env,
                          stderr=subprocess.PIPE, text=True)
  for line in proc.stderr:
    if line.startswith("compiled the train step"):
      break
  time.sleep(2)
  proc.send_signal(signal.SIGTERM)
  err = proc.stderr.read()
  assert proc.wait(timeout=300) == 128 + signal.SIGTERM, err
  assert "stopped by signal 15: checkpoint saved at step" in err
  ckpt = Checkpointer(str(tmp_path / "checkpoints"), keep=3, read_only=True)
  assert ckpt.steps() and ckpt.steps()[-1] < 100_000
  ckpt.close()


def _bpe_jsonl(tmp_path):
  """A BPE trained on a .jsonl corpus (the token store and tokenizer live in the workdir, reused on resume)."""
  from pangu_jax.train.sources import embedded_documents

  src = tmp_path / "corpus.jsonl"
  src.write_text("".join(json.dumps({"text": d}) + "\n" for d in embedded_documents()))
  return ("--config.data.tokenizer=bpe", "--config.data.bpe_vocab_size=300", f"--config.data.path={src}",
          "--config.model.vocab_size=300")


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["embedded_bytes", "bpe_jsonl"])
def test_kill_dash_nine_then_resume_is_exact(tmp_path, corpus):
  bpe = corpus == "bpe_jsonl"
  steps, kills = (12, (4, 8)) if bpe else (24, (6, 14))  # the BPE run is shorter: the suite's budget
  extra = _bpe_jsonl(tmp_path) if bpe else ()
  ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
  subprocess.run(_train_cmd(ref_dir, *extra, steps=steps, checkpoint_every=1), cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  # Kill -9 twice at increasing points (checkpoints every step, so kills often land mid-write).
  for kill_after in kills:
    proc = subprocess.Popen(_train_cmd(run_dir, *extra, steps=steps, checkpoint_every=1), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
      try:
        done = [json.loads(x) for x in open(run_dir / "metrics.jsonl") if x.strip()]
      except (OSError, ValueError):
        done = []
      if any(r.get("step", 0) >= kill_after and "loss" in r for r in done):
        break
      time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  subprocess.run(_train_cmd(run_dir, *extra, steps=steps, checkpoint_every=1), cwd=REPO, check=True,
                 capture_output=True, timeout=600)
  ref = [(r["step"], r["loss"]) for r in read_metrics(str(ref_dir)) if "loss" in r]
  got = [(r["step"], r["loss"]) for r in read_metrics(str(run_dir)) if "loss" in r]
  assert got == ref  # bitwise-equal losses at every step


def test_generate_and_export_from_a_training_workdir(tmp_path):
  train(micro_config(steps=3), str(tmp_path), progress=False)
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.generate", f"--workdir={tmp_path}", "--prompt=The ",
                         "--max_tokens=5", "--speculative", "--json"], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert 1.0 <= out["acceptance_length"] <= 2.0 and out["tokens_per_s"] > 0
  exp = tmp_path / "export"
  proc = subprocess.run([sys.executable, "-m", "npu_backend.export", f"--workdir={tmp_path}", f"--out={exp}",
                         "--seq_len=8", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["max_rel_err"] <= 1e-5 and summary["backend"] == "cpu"
