"""WDPD (our definition): weighted dimensional policy distillation of a teacher trained on geometry A into a student
for geometry B.

The paper (arXiv 2211.02443) does not publish its rule; ours (docs/control_brax_transfer.md):

* **Weights.** Action dimension d (a pose increment on axis x, y, z, rx, ry or rz) gets
  `w_d = min(s_d, 1 / s_d)`, where `s_d` is ETCL's factor on that axis's admittance
  (control_brax.etcl.scale_factors): an axis whose contact mechanics the geometry
  change leaves alone (s_d = 1) keeps the teacher's action fully; the more the axis's
  mechanics change (in either direction), the less the teacher's action is trusted.
* **Loss.** On observations of B (the teacher acting on B with the ETCL-reconfigured
  compliance), the student's mean action is pulled toward the teacher's with weight
  `w_d` and toward zero with weight `1 - w_d`:

      L = mean_s sum_d [ w_d (mu_s,d(s) - mu_t,d(s))^2 + (1 - w_d) mu_s,d(s)^2 ] / n_dims

  Zero is the "leave it to the compliance controller" action (the RL offset does
  not move), so a distrusted dimension starts near the reconfigured compliance
  controller's behaviour instead of near a foreign geometry's policy, and RL
  fine-tuning on B learns it. The minimiser is `mu_s,d = w_d mu_t,d` pointwise.
  The student's log-std per dimension is the same blend of the teacher's and a
  fresh policy's: distrusted dimensions explore as a fresh policy does.

The student is a freshly initialised network of the teacher's architecture; it
reuses the teacher's observation statistics (so both see the same normalised
inputs) and value network (a starting critic for fine-tuning).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from control_brax import etcl
from control_brax.config import POSE_AXES, parse_axes
from control_brax.rl import networks as nets


def weights(fa: etcl.Features, fb: etcl.Features, action_dims=POSE_AXES,
            law: str = "torque") -> np.ndarray:
  """Per-action-dimension weights in [0, 1] for the env's `action_dims` (the module docstring's rule), from the
  factors of the ETCL law the compliance was carried with (the transfer comparison's: v2, "torque")."""
  s, _ = etcl.scale_factors(fa, fb, law)
  axes = parse_axes(action_dims, "env.action_dims")
  return np.array([min(s[a], 1.0 / s[a]) for a in axes])


def loss(student_mean, teacher_mean, w):
  """The weighted distillation loss over a batch of mean actions (batch, n_dims); w (n_dims,)."""
  per_dim = w * (student_mean - teacher_mean) ** 2 + (1.0 - w) * student_mean ** 2
  return jnp.mean(jnp.sum(per_dim, axis=-1)) / student_mean.shape[-1]


def distill(key, teacher_policy, obs, w, hidden, init_log_std: float, steps: int = 400, batch: int = 512,
            lr: float = 1e-3):
  """A fresh student policy fitted to `teacher_policy` on normalised observations `obs` (n, obs_size).

  Pure function of its inputs (jit/vmap-able over seeds). Returns (student policy params, final full-data loss).
  """
  w = jnp.asarray(w)
  k_init, k_batches = jax.random.split(key)
  n_act = teacher_policy["log_std"].shape[-1]
  fresh = nets.init_policy(k_init, obs.shape[-1], n_act, hidden, init_log_std)
  target = nets.policy_mean(teacher_policy, obs)
  opt = optax.adam(lr)

  def step(carry, k):
    layers, o = carry
    idx = jax.random.randint(k, (batch,), 0, obs.shape[0])
    g = jax.grad(lambda q: loss(nets.mlp(q, obs[idx]), target[idx], w))(layers)
    upd, o = opt.update(g, o, layers)
    return (optax.apply_updates(layers, upd), o), None

  (layers, _), _ = jax.lax.scan(step, (fresh["mean"], opt.init(fresh["mean"])), jax.random.split(k_batches, steps))
  student = {"mean": layers, "log_std": w * teacher_policy["log_std"] + (1.0 - w) * fresh["log_std"]}
  return student, loss(nets.policy_mean(student, obs), target, w)
