"""CS3 estimator against known ground truth: a synthetic system's dependency graph, exact Shapley values, physics."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from control_brax import shapley

N_ACT, N_STATE = 4, 5
# Ground truth of `synthetic_step`: a0 -> s0, s1; a1 -> s1, s2; a2 -> s2; a3 -> s4; nothing drives s3.
# a1 and a2 reach s2 ONLY through their product (each alone changes nothing there).
TRUE_GRAPH = np.array([[1, 1, 0, 0, 0],
                       [0, 1, 1, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 0, 0, 1]])


def synthetic_step(states, a):
  s = states["s"]
  return jnp.stack([s[:, 0] + a[:, 0],
                    s[:, 1] + 2.0 * a[:, 1] + a[:, 0] * jnp.cos(s[:, 0]),
                    s[:, 2] + a[:, 1] * a[:, 2],
                    s[:, 3] + 0.0 * s[:, 4],
                    s[:, 4] + a[:, 3] ** 3 * (1.0 + s[:, 4] ** 2)], axis=1)


def synthetic_sample(key, batch):
  k_s, k_a = jax.random.split(key)
  return ({"s": jax.random.normal(k_s, (batch, N_STATE))},
          jax.random.uniform(k_a, (batch, N_ACT), minval=-1.0, maxval=1.0))


def test_recovers_known_graph_with_interaction_only_edge():
  phi, se, history = shapley.estimate(synthetic_step, synthetic_sample, N_ACT, jax.random.PRNGKey(0), samples=4096,
                                      batch=1024)
  chex.assert_shape([phi, se], (N_ACT, N_STATE))
  graph = shapley.connection_graph(phi, se, z=3.0, tau=0.1)
  np.testing.assert_array_equal(graph, TRUE_GRAPH)
  # the interaction-only edges are found, and true non-edges score exactly zero (no leakage through the estimator)
  assert phi[1, 2] > 0 and phi[2, 2] > 0
  np.testing.assert_array_equal(phi[TRUE_GRAPH == 0], 0.0)
  assert len(history) == 4 and history[-1]["samples"] == 4096


def _exact_reference(n_samples: int = 20_000):
  """Exact Shapley values (all 2^4 coalitions, float64 numpy) of v_j(S) = E|f_j(s, a_S) - f_j(s, 0)|."""
  rng = np.random.default_rng(1)
  s = rng.normal(size=(n_samples, N_STATE))
  a = rng.uniform(-1, 1, size=(n_samples, N_ACT))

  def f(act):
    return np.stack([s[:, 0] + act[:, 0], s[:, 1] + 2 * act[:, 1] + act[:, 0] * np.cos(s[:, 0]),
                     s[:, 2] + act[:, 1] * act[:, 2], s[:, 3], s[:, 4] + act[:, 3] ** 3 * (1 + s[:, 4] ** 2)], 1)

  base = f(np.zeros_like(a))
  values = np.zeros((2 ** N_ACT, N_STATE))
  for mask in range(2 ** N_ACT):
    keep = np.array([(mask >> i) & 1 for i in range(N_ACT)], float)
    values[mask] = np.abs(f(a * keep) - base).mean(0)
  return shapley.exact_shapley(values), values


def test_monte_carlo_matches_exact_shapley_and_converges():
  ref, values = _exact_reference()
  # efficiency of the reference: the Shapley values of each column sum to v(everyone)
  np.testing.assert_allclose(ref.sum(0), values[-1], atol=1e-12)
  phi, se, history = shapley.estimate(synthetic_step, synthetic_sample, N_ACT, jax.random.PRNGKey(3), samples=8192,
                                      batch=512)
  err = np.abs(phi - ref)
  assert np.all(err <= 4.5 * se + 0.01), (err, se)  # 0.01: the reference's own Monte-Carlo error (20k samples)
  # convergence: the standard error of every nonzero entry falls like 1/sqrt(samples) (4x samples -> about half)
  se_1k = np.asarray(history[1]["stderr"])  # 1024 samples
  se_4k = np.asarray(history[7]["stderr"])  # 4096 samples
  on = TRUE_GRAPH == 1
  ratio = se_4k[on] / se_1k[on]
  assert np.all((ratio > 0.35) & (ratio < 0.7)), ratio


def test_per_sample_efficiency_and_ordering_independence_of_the_sum():
  """Each sample's marginals sum, over action components, to |f(s, a) - f(s, 0)| whatever the ordering."""
  states, a = synthetic_sample(jax.random.PRNGKey(5), 64)
  full = np.abs(np.asarray(synthetic_step(states, a) - synthetic_step(states, jnp.zeros_like(a))))
  for perm in itertools.islice(itertools.permutations(range(N_ACT)), 0, 24, 5):
    perms = jnp.tile(jnp.asarray(perm), (64, 1))
    m = shapley.marginals(synthetic_step, states, a, jnp.zeros(N_ACT), perms)
    chex.assert_shape(m, (64, N_ACT, N_STATE))
    np.testing.assert_allclose(np.asarray(m).sum(1), full, rtol=1e-5, atol=1e-5)


def test_prefix_masks_follow_the_ordering():
  perms = jnp.asarray([[2, 0, 1], [0, 1, 2]])
  m = np.asarray(shapley.prefix_masks(perms))
  chex.assert_shape(m, (4, 2, 3))
  np.testing.assert_array_equal(m[:, 0], [[0, 0, 0], [0, 0, 1], [1, 0, 1], [1, 1, 1]])
  np.testing.assert_array_equal(m[:, 1], [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_threshold_rule():
  phi = np.array([[1.0, 0.05, 0.0], [0.2, 0.5, 0.0]])
  se = np.array([[0.1, 0.001, 0.0], [0.1, 0.01, 0.0]])
  # (1, 0): 0.2 < 3 * 0.1 -> noise; (0, 1): 0.05 < 0.1 * 0.5 -> negligible; column 2: nothing drives it
  np.testing.assert_array_equal(shapley.connection_graph(phi, se, z=3, tau=0.1), [[1, 0, 0], [0, 1, 0]])


