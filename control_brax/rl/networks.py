"""Plain-pytree MLPs for policies and critics (no module system: PEAD and LCRL edit the weights directly).

A network is a list of {"w", "b"} layers. Policies are Gaussian with a
state-independent log-std per action output; the environment clips actions to
[-1, 1].

LCRL (docs/control_brax_cs3_lcrl.md): a *local* network is one sub-network per
action component, stored stacked (every weight has a leading component axis),
whose first layer is multiplied by a fixed 0/1 connection mask (action rows x
state columns, from a CS3 connection graph). The mask is a constant held by the
caller, not a parameter, so no optimiser can move it; because the masked
weights enter the forward pass multiplied by exactly 0, output i does not
depend on state component j outside its connection set at all (its gradient
with respect to that input is exactly zero). A mask of ones gives per-component
sub-networks that see everything (an architecture control for the comparison).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def init_mlp(key, sizes, last_scale: float = 1.0):
  """Layers sizes[0] -> ... -> sizes[-1]; LeCun-normal weights, the last layer scaled by `last_scale`."""
  layers = []
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (k, n_in, n_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    scale = (last_scale if i == len(sizes) - 2 else 1.0) / np.sqrt(n_in)
    layers.append({"w": scale * jax.random.normal(k, (n_in, n_out)), "b": jnp.zeros(n_out)})
  return layers


def mlp(layers, x, activation=jnp.tanh):
  for i, layer in enumerate(layers):
    x = x @ layer["w"] + layer["b"]
    if i < len(layers) - 1:
      x = activation(x)
  return x


def init_policy(key, obs_size: int, action_size: int, hidden=(64, 64), init_log_std: float = -0.5, mask=None):
  """Gaussian policy parameters; with `mask` (action_size, obs_size) the mean is a local network (LCRL)."""
  if mask is None:
    mean = init_mlp(key, (obs_size, *hidden, action_size), last_scale=0.01)
  else:
    mean = init_local_mlp(key, mask, hidden, last_scale=0.01)
  return {"mean": mean, "log_std": jnp.full(action_size, init_log_std, jnp.float32)}  # not weak-typed: see test_rl


def policy_mean(params, obs, mask=None):
  """The Gaussian policy's mean: a global MLP, or with `mask` (n_actions, n_obs) the local network."""
  if mask is None:
    return mlp(params["mean"], obs)
  return local_mlp(params["mean"], mask, obs)


def init_local_mlp(key, mask, hidden, last_scale: float = 1.0):
  """Stacked per-component sub-networks n_obs -> hidden... -> 1, one per row of `mask` (n_out, n_in).

  LeCun-normal weights with the fan-in of the first layer counted over the
  connected inputs only, so a component seeing 3 inputs starts with the same
  pre-activation scale as one seeing 12.
  """
  mask = np.asarray(mask, np.float32)
  n_out, n_in = mask.shape
  sizes = (n_in, *hidden, 1)
  keys = jax.random.split(key, len(sizes) - 1)
  layers = []
  for i, (k, a, b) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
    if i == 0:
      fan = np.maximum(mask.sum(1), 1.0)[:, None, None]
    else:
      fan = np.full((n_out, 1, 1), a, np.float32)
    scale = (last_scale if i == len(sizes) - 2 else 1.0) / np.sqrt(fan)
    w = jnp.asarray(scale) * jax.random.normal(k, (n_out, a, b))
    if i == 0:
      w = w * jnp.asarray(mask)[:, :, None]  # unconnected weights start (and, masked, act as) zero
    layers.append({"w": w, "b": jnp.zeros((n_out, b))})
  return layers


def local_mlp(layers, mask, x, activation=jnp.tanh):
  """(..., n_in) -> (..., n_out): output i is sub-network i applied to x with inputs outside mask[i] cut."""
  w0 = layers[0]["w"] * jnp.asarray(mask, layers[0]["w"].dtype)[:, :, None]
  h = jnp.einsum("...i,kih->...kh", x, w0) + layers[0]["b"]
  for layer in layers[1:]:
    h = activation(h)
    h = jnp.einsum("...kh,khg->...kg", h, layer["w"]) + layer["b"]
  return h[..., 0]


def gaussian_log_prob(mean, log_std, a):
  return jnp.sum(-0.5 * ((a - mean) / jnp.exp(log_std)) ** 2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_entropy(log_std):
  return jnp.sum(log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e), axis=-1)


def extend_outputs(layers, index):
  """The last layer's outputs re-indexed: new output j copies old output index[j] (PEAD extension)."""
  idx = jnp.asarray(index)
  last = {"w": layers[-1]["w"][:, idx], "b": layers[-1]["b"][idx]}
  return [*layers[:-1], last]


def extend_inputs(layers, start: int, index, counts):
  """First-layer input rows [start:] re-indexed for an extended action input (DDPG critic under PEAD).

  New input j copies old input index[j] divided by counts[index[j]] (how many new
  inputs share it), so Q(s, a_extended) = Q(s, a_grouped) whenever every member
  of a group carries the group's value.
  """
  idx = jnp.asarray(index)
  w = layers[0]["w"]
  scale = 1.0 / jnp.asarray(counts, w.dtype)[idx]
  new_w = jnp.concatenate([w[:start], w[start:][idx] * scale[:, None]], axis=0)
  return [{"w": new_w, "b": layers[0]["b"]}, *layers[1:]]
