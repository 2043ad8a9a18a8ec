"""The behaviour study: its statistics against closed forms and synthetic ground truth, and a tiny end-to-end run."""

import json
import os

import numpy as np
import pytest

from experiments import behaviour as study


def test_mutual_information_closed_forms():
  # Independent domain and expert: I = 0. One-to-one: I = H(D) = log2(3) for uniform domains.
  indep = np.outer([30, 60, 10], [1, 2, 1, 4])
  assert study.mutual_information(indep) == pytest.approx(0.0, abs=1e-12)
  diag = np.diag([5, 5, 5])
  assert study.mutual_information(diag) == pytest.approx(np.log2(3), rel=1e-12)
  # Naive double loop over the definition, on a random table.
  rng = np.random.default_rng(0)
  c = rng.integers(0, 50, size=(3, 8)).astype(float)
  p = c / c.sum()
  naive = sum(p[i, j] * np.log2(p[i, j] / (p[i].sum() * p[:, j].sum()))
              for i in range(3) for j in range(8) if p[i, j] > 0)
  assert study.mutual_information(c) == pytest.approx(naive, rel=1e-10)


def test_normalised_mi_synthetic_routing():
  rng = np.random.default_rng(1)
  dom = rng.integers(0, 3, size=3000)
  # Each domain routed to its own pair of experts: the expert determines the domain -> NMI = 1.
  experts = np.stack([2 * dom, 2 * dom + 1], axis=-1)
  assert study.normalised_mi(dom, experts, 3, 6) == pytest.approx(1.0, rel=1e-9)
  # Routing independent of the domain: NMI near 0, and the shifted baseline is near 0 as well.
  rand = rng.integers(0, 8, size=(3000, 2))
  assert study.normalised_mi(dom, rand, 3, 8) < 0.01
  # With specialised routing, shifting the labels destroys the alignment.
  runs = np.repeat(rng.integers(0, 3, size=60), 50)  # domains come in runs, as lines do
  spec = np.stack([2 * runs, 2 * runs + 1], axis=-1)
  mean, mx = study.shifted_baseline(runs, spec, 3, 6, shifts=8)
  assert mx < 0.2 < study.normalised_mi(runs, spec, 3, 6)


def test_count_spikes_synthetic():
  base = np.ones(100)
  assert study.count_spikes(base, window=10, factor=3.0) == 0
  s = base.copy()
  s[[30, 31, 60]] = 5.0  # two events (30-31 are one run), one more at 60
  s[80] = np.nan  # a non-finite step is a spike
  assert study.count_spikes(s, window=10, factor=3.0) == 3
  s2 = base.copy()
  s2[50] = 2.9  # below the factor
  assert study.count_spikes(s2, window=10, factor=3.0) == 0


def test_count_spikes_robust_guard_ignores_noise_level_jumps():
  rng = np.random.default_rng(0)
  noisy = 2.0 * (1 + 0.08 * rng.standard_normal(400))  # 8% batch noise: many 10% jumps over the median
  assert study.count_spikes(noisy, window=20, factor=1.1) > 5
  assert study.count_spikes(noisy, window=20, factor=1.1, mad_k=6.0) == 0
  noisy[200] = 4.0  # a real jump (about 12 noise standard deviations)
  assert study.count_spikes(noisy, window=20, factor=1.1, mad_k=6.0) == 1


def test_load_balance():
  lb = study.load_balance(np.array([[2.0, 2.0, 2.0, 2.0], [8.0, 0.0, 0.0, 0.0]]))
  np.testing.assert_allclose(lb["cv"], [0.0, np.sqrt(3.0)])
  np.testing.assert_allclose(lb["max_over_mean"], [1.0, 4.0])


TEXT = """Title of a topic
****************

Some prose that explains a thing in plain English words, wrapped at
seventy characters like the rest of the documentation.

   >>> x = [1, 2, 3]
   >>> x.append(4)

   def f(a, b=1):
       return a + b

   assignment_stmt ::= (target_list "=")+ (starred_expression | yield_expression)

+----------+-----------+
| Option   | Meaning   |
|==========+===========|
| "'<'"    | left      |
+----------+-----------+

   * An indented list item of prose, which keeps talking about the thing
     in ordinary words for a while, “quoted” and all.

===========  ========
Column one   Two
===========  ========
"""


def test_classify_lines_known_labels():
  lines = TEXT.split("\n")
  labels = study.classify_lines(lines)
  want = {"Title of a topic": "prose", "Some prose": "prose", "   >>> x =": "code", "   def f(a": "code",
          "       return a": "code", "   assignment_stmt": "code", "+----------+": "table", "| Option": "table",
          "   * An indented": "prose", "     in ordinary": "prose", "Column one": "table", "===========  ==": "table"}
  for prefix, lab in want.items():
    hits = [labels[i] for i, ln in enumerate(lines) if ln.startswith(prefix)]
    assert hits and all(h == lab for h in hits), (prefix, hits)


def test_byte_domains_align_with_utf8():
  text = "prose “quoted” line\n   >>> x = 1\n+--+\n| é|\n+--+"
  dom = study.byte_domains(text)
  assert len(dom) == len(text.encode("utf-8"))
  raw = text.encode("utf-8")
  # Every '|' and '+' byte is in a table line; every '>' byte is in a code line.
  for ch, d in ((b"|", "table"), (b"+", "table"), (b">", "code")):
    pos = [i for i in range(len(raw)) if raw[i : i + 1] == ch]
    assert pos and all(study.DOMAINS[dom[i]] == d for i in pos)


def test_val_domains_follow_the_split():
  from pangu_jax.train.data import Corpus

  cfg = study.get_config().pangu
  corpus = Corpus(cfg.data, 64)
  dv = study.val_domains(cfg.data, corpus)
  assert dv.shape == corpus.val.shape
  # Independent check of the alignment: grid-table border bytes ('+' followed by '-') are labelled table.
  v = corpus.val
  border = np.nonzero((v[:-1] == ord("+")) & (v[1:] == ord("-")))[0]
  assert len(border) > 10
  assert np.mean(dv[border] == study.DOMAINS.index("table")) > 0.95
  assert set(np.unique(dv)) == {0, 1, 2}


def test_config_validation_names_the_field():
  from confspec import ConfigError

  cfg = study.get_config()
  cfg.study.seeds = 0
  with pytest.raises(ConfigError, match="config.study.seeds"):
    study.validate_study_config(cfg)
  cfg = study.get_config()
  cfg.pangu.train.ep_group_size = cfg.pangu.train.batch_size
  with pytest.raises(ConfigError, match="ep_group_size"):
    study.validate_study_config(cfg)


@pytest.mark.slow
def test_study_end_to_end_tiny(tmp_path):
  from conftest import small_model_cfg

  cfg = study.get_config()
  cfg.pangu.model = small_model_cfg(vocab_size=256, max_seq_len=128)
  cfg.pangu.train.update(batch_size=4, seq_len=32, ep_group_size=2, eval_batches=2, eval_every=4)
  cfg.study.update(seeds=1, balance_steps=6, stability_steps=25, probe_windows=8, shifts=2, spike_window=4)
  out = str(tmp_path / "study")
  logs = []
  res = study.run_study(cfg, out, progress=False, log=logs.append)
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  assert {r["name"] for r in saved["runs"]} == {"micro_batch_s0", "ep_group_s0", "global_batch_s0",
                                               "dssn_tinyinit_s0", "prenorm_stdinit_s0"}
  for r in saved["runs"]:
    assert r["training"]["steps"] == (6 if r["group"] == "balance" else 25)
    if r["group"] == "balance":
      for lay in r["routing"]["layers"]:
        counts = np.asarray(lay["counts"])
        # every probe token contributes top_k assignments
        assert counts.sum() == r["routing"]["probe_tokens"] * cfg.pangu.model.top_k
        assert 0.0 <= lay["nmi"] <= 1.0
  for name in ("report.md", "domain_expert_lift.png", "balance_granularity.png", "stability.png"):
    assert os.path.exists(os.path.join(out, name)), name
  # The report's numbers are those of results.json.
  report = open(res["report"]).read()
  ep = saved["aggregate"]["balance"]["ep_group"]
  assert f"| ep_group | {ep['nmi']['mean']:.3f} |" in report
  # Re-running resumes: nothing is trained again.
  logs.clear()
  study.run_study(cfg, out, progress=False, log=logs.append)
  assert not any("run " in m and "steps)" in m for m in logs)
