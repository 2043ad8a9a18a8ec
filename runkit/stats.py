"""Seed-level statistics for experiment reports: bootstrap intervals through `scipy.stats.bootstrap`.

Our definitions (used by every experiment driver and report):
- `mean_ci`: the mean over seeds and its 95% percentile-bootstrap interval (10,000 resamples, fixed seed, so a
  report regenerates to the same digits). Missing values (None) are dropped.
- `median_ci`: the median over seeds and its 95% percentile-bootstrap interval, for censored figures such as
  "env steps to 80% success" where a seed that never got there is None. None counts as +infinity (it is larger
  than every reached value), and a median or bound that is not finite - beyond every reached value - is
  reported as None ("not reached"), never as a made-up number.
- `mean_diff_ci`: the mean of paired differences and its percentile-bootstrap interval.
- `two_sample_ci`: method A against method B over their own seeds (two independent samples): the ratio
  stat(A) / stat(B) (or the difference) and its 95% percentile-bootstrap interval, each sample resampled on its
  own (`scipy.stats.bootstrap`, paired=False). None counts as +infinity as in `median_ci`; a ratio or bound that
  is infinite (A's statistic not reached) is reported as None. The claims ladder's decision rule reads it
  (docs/claims_declaration.md).
- `paired_binary_change_ci`: the closed-form (normal) 95% interval of a paired success-rate change from its
  discordant counts, for thousands of paired episodes where resampling would add nothing.

One sample gives a degenerate interval [x, x] (scipy needs two).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

N_RESAMPLES = 10_000
CONFIDENCE = 0.95
Z95 = 1.96  # the normal quantile of the closed-form interval, as the committed reports state it


def _interval(v: np.ndarray, statistic, n_resamples: int, seed: int) -> tuple[float, float]:
  if v.size == 1:
    return float(v[0]), float(v[0])
  res = stats.bootstrap((v,), statistic, vectorized=True, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                        method="percentile", rng=np.random.default_rng(seed))
  return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mean_ci(values, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
  """{"mean", "ci95": [lo, hi], "n"} of the values that are not None (mean None when there are none)."""
  v = np.asarray([x for x in values if x is not None], dtype=float)
  if v.size == 0:
    return {"mean": None, "ci95": [None, None], "n": 0}
  lo, hi = _interval(v, lambda x, axis: np.mean(x, axis=axis), n_resamples, seed)
  return {"mean": float(v.mean()), "ci95": [lo, hi], "n": int(v.size)}


def median_ci(values, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
  """{"median", "ci95": [lo, hi], "reached", "n"}; None values are censored at +infinity (see the module)."""
  v = np.asarray([np.inf if x is None else float(x) for x in values], dtype=float)
  reached = v[np.isfinite(v)]
  top = float(reached.max()) if reached.size else -np.inf
  fin = lambda x: float(x) if np.isfinite(x) and x <= top else None  # noqa: E731
  if v.size == 0:
    return {"median": None, "ci95": [None, None], "reached": 0, "n": 0}
  # scipy interpolates between resampled medians; a finite stand-in for +infinity keeps that arithmetic finite,
  # and anything above the largest reached value is then reported as not reached.
  big = np.where(np.isfinite(v), v, max(abs(top), 1.0) * 1e6 if reached.size else 1.0)
  lo, hi = _interval(big, lambda x, axis: np.median(x, axis=axis), n_resamples, seed)
  return {"median": fin(np.median(v)), "ci95": [fin(lo), fin(hi)], "reached": int(reached.size), "n": int(v.size)}


def mean_diff_ci(differences, n_resamples: int = 5000, seed: int = 0) -> list[float]:
  """95% percentile-bootstrap interval of the mean of paired differences."""
  return list(_interval(np.asarray(differences, dtype=float), lambda x, axis: np.mean(x, axis=axis), n_resamples,
                        seed))


def two_sample_ci(a, b, statistic: str = "median", kind: str = "ratio", n_resamples: int = N_RESAMPLES,
                  seed: int = 0) -> dict:
  """{"estimate", "ci95": [lo, hi], "n": [n_a, n_b]}: stat(a) / stat(b) (kind "ratio") or stat(a) - stat(b)
  ("diff"), statistic "median" or "mean", None values censored at +infinity (see the module)."""
  if statistic not in ("median", "mean") or kind not in ("ratio", "diff"):
    raise ValueError(f"two_sample_ci: statistic {statistic!r} / kind {kind!r}; allowed: median|mean, ratio|diff")
  va, vb = ([np.inf if x is None else float(x) for x in v] for v in (a, b))
  if not va or not vb:
    return {"estimate": None, "ci95": [None, None], "n": [len(va), len(vb)]}
  finite = [x for x in va + vb if np.isfinite(x)]
  big = max(max(abs(x) for x in finite), 1.0) * 1e6 if finite else 1.0  # finite stand-in for +infinity
  xa, xb = (np.where(np.isfinite(v), v, big) for v in (np.asarray(va), np.asarray(vb)))
  f = np.median if statistic == "median" else np.mean

  def stat(x, y, axis):
    fx, fy = f(x, axis=axis), f(y, axis=axis)
    return fx / fy if kind == "ratio" else fx - fy

  # a stand-in in a statistic means "not reached": beyond every reached value, reported as None
  unbounded = lambda v: None if abs(v) >= big / 2 or (kind == "ratio" and v >= 1e5) else float(v)  # noqa: E731
  est = unbounded(stat(xa, xb, None))
  if xa.size == 1 and xb.size == 1:
    return {"estimate": est, "ci95": [est, est], "n": [1, 1]}
  res = stats.bootstrap((xa, xb), stat, vectorized=True, paired=False, n_resamples=n_resamples,
                        confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
  lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
  return {"estimate": est, "ci95": [unbounded(lo), unbounded(hi)], "n": [int(xa.size), int(xb.size)]}


def paired_binary_change_ci(won: int, lost: int, n: int) -> list[float]:
  """95% interval of the paired success change from the discordant counts: each episode contributes +1 (won),
  -1 (lost) or 0, so the mean change is (won - lost) / n with variance ((won + lost) / n - mean^2) / n."""
  mean = (won - lost) / n
  half = Z95 * np.sqrt(max((won + lost) / n - mean ** 2, 0.0) / n)
  return [float(mean - half), float(mean + half)]
