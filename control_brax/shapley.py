"""CS3: continuous-space serialized Shapley values of action components for state components (our definition).

The papers (LCRL, arXiv 2210.13255) do not publish the formula, so this module
defines one and estimates it; docs/control_brax_cs3_lcrl.md explains the choice.

Game. For a state s, a probe action a (both drawn from given distributions) and a
coalition S of action components, drive only the components in S (the others
held at `baseline`, a zero pose increment) for one step of the system
`effect_fn(s, a) -> next state features`. For state component j the value is

    v_j(S) = E_{s, a} | f_j(s, a_S (+) b_{-S}) - f_j(s, b) |,     v_j({}) = 0,

the expected size of the change the coalition causes in component j relative
to doing nothing. The absolute value is inside the expectation so that effects
whose sign depends on a or s (a symmetric action distribution) do not cancel,
and an effect that exists only through an interaction of two components
(f_j = a_1 a_2) gives v_j({1, 2}) > 0 = v_j({1}) = v_j({2}).

CS3 value phi_ij = the Shapley value of component i in the game v_j:
the average over orderings ("serialized": components join one after another)
of i's marginal contribution v_j(P_i U {i}) - v_j(P_i), P_i = the components
before i. The expectation over continuous (s, a) and the average over
orderings are estimated together by Monte Carlo: each sample is an independent
draw (s, a, ordering), so its n marginal contributions are evaluated with n + 1
calls of the batched step (the baseline and each prefix of the ordering), the
estimate is the sample mean and its standard error is the sample standard
deviation / sqrt(samples). Efficiency holds per sample: the marginals of one
sample sum to |f_j(s, a) - f_j(s, b)|.

Connection graph: edge i -> j iff phi_ij > z * stderr_ij (distinguishable from
zero) and phi_ij > tau * max_i' phi_i'j (not negligible next to the strongest
action on that state component; state components are in different units, so
strength is compared within a column only).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def prefix_masks(perms: jax.Array) -> jax.Array:
  """(n + 1, B, n) 0/1 masks: mask[k, b, i] = 1 iff component i is among the first k of ordering perms[b]."""
  n = perms.shape[-1]
  rank = jnp.argsort(perms, axis=-1)  # rank[b, i] = position of component i in ordering b
  return (rank[None] < jnp.arange(n + 1)[:, None, None]).astype(jnp.float32)


def marginals(effect_fn: Callable, states, actions: jax.Array, baseline: jax.Array, perms: jax.Array) -> jax.Array:
  """Per-sample marginal contributions (B, n_actions, n_state) of each action component to each |state change|.

  effect_fn(states, actions) -> (B', n_state): the batched one-step map on a
  batch of B' states (any pytree with a leading batch axis) and actions (B', n).
  It is called once, on the (n + 1) x B coalition actions of all samples.
  """
  n_samples, n = actions.shape
  masks = prefix_masks(perms)  # (n + 1, B, n)
  coalition = masks * actions[None] + (1.0 - masks) * baseline  # (n + 1, B, n)
  tiled = jax.tree.map(  # explicit sizes: simulator states may hold zero-size arrays
      lambda x: jnp.broadcast_to(x[None], (n + 1, *x.shape)).reshape(((n + 1) * n_samples, *x.shape[1:])), states)
  y = effect_fn(tiled, coalition.reshape(-1, n))
  y = y.reshape(n + 1, n_samples, -1)
  v = jnp.abs(y - y[:1])  # v[k] = |f(s, first k driven) - f(s, none driven)|, v[0] = 0
  gain = v[1:] - v[:-1]  # (n, B, n_state): gain[k] belongs to component perms[:, k]
  onehot = jax.nn.one_hot(perms.T, n, dtype=gain.dtype)  # (n, B, n): which component joined at position k
  return jnp.einsum("kbi,kbj->bij", onehot, gain)


class Accumulator:
  """Streaming mean and standard error of per-sample marginals (float64 on the host)."""

  def __init__(self):
    self.n = 0
    self.s1 = None
    self.s2 = None

  def add(self, m) -> None:
    m = np.asarray(m, np.float64)
    if self.s1 is None:
      self.s1, self.s2 = np.zeros(m.shape[1:]), np.zeros(m.shape[1:])
    self.n += m.shape[0]
    self.s1 += m.sum(0)
    self.s2 += (m ** 2).sum(0)

  def mean(self) -> np.ndarray:
    return self.s1 / self.n

  def stderr(self) -> np.ndarray:
    mean = self.mean()
    var = np.maximum(self.s2 / self.n - mean ** 2, 0.0) * self.n / max(self.n - 1, 1)
    return np.sqrt(var / self.n)


def estimate(effect_fn: Callable, sample_fn: Callable, n_actions: int, key: jax.Array, samples: int, batch: int,
             baseline=None, progress: Callable | None = None):
  """Monte-Carlo CS3 estimate: (phi, stderr, history) with phi/stderr of shape (n_actions, n_state).

  sample_fn(key, batch) -> (states, actions) draws `batch` (state, probe action)
  pairs; orderings are drawn uniformly here. `history` lists, after every batch,
  the samples used so far and the estimate and standard error then (the
  convergence record). The marginal computation is jitted once per shapes.
  """
  baseline = jnp.zeros(n_actions) if baseline is None else jnp.asarray(baseline)
  step = jax.jit(lambda s, a, p: marginals(effect_fn, s, a, baseline, p))
  acc, history = Accumulator(), []
  rounds = -(-samples // batch)
  for r in range(rounds):
    key, k_s, k_p = jax.random.split(key, 3)
    states, actions = sample_fn(k_s, batch)
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_actions))(jax.random.split(k_p, batch))
    acc.add(jax.device_get(step(states, actions, perms)))
    history.append({"samples": acc.n, "phi": acc.mean().tolist(), "stderr": acc.stderr().tolist()})
    if progress is not None:
      progress(r + 1, rounds)
  return acc.mean(), acc.stderr(), history


def exact_shapley(values: np.ndarray) -> np.ndarray:
  """Exact Shapley values from all 2^n coalition values (a naive reference for tests).

  values[mask] is v(S) for the coalition whose bit i is set iff component i is
  in S (values may have trailing axes); returns (n, ...) Shapley values.
  """
  from math import factorial  # noqa: PLC0415

  n = int(np.log2(values.shape[0]))
  phi = np.zeros((n, *values.shape[1:]))
  for i in range(n):
    for mask in range(2 ** n):
      if mask >> i & 1:
        continue
      size = bin(mask).count("1")
      w = factorial(size) * factorial(n - size - 1) / factorial(n)
      phi[i] += w * (values[mask | 1 << i] - values[mask])
  return phi


def connection_graph(phi, stderr, z: float = 3.0, tau: float = 0.1) -> np.ndarray:
  """0/1 (n_actions, n_state): phi > z * stderr and phi > tau * (column max of phi)."""
  phi, stderr = np.asarray(phi), np.asarray(stderr)
  col_max = phi.max(axis=0, keepdims=True)
  return ((phi > z * stderr) & (phi > tau * col_max)).astype(int)
