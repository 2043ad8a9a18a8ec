"""Plain-pytree MLPs for policies and critics (no module system: PEAD and LCRL edit the weights directly).

A network is a list of {"w", "b"} layers. Policies are Gaussian with a
state-independent log-std per action output; the environment clips actions to
[-1, 1]. LCRL's local connections are a 0/1 mask on the first layer of a
per-action-component sub-network (control_brax.lcrl); a globally connected
network is the mask of ones.
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


def init_policy(key, obs_size: int, action_size: int, hidden=(64, 64), init_log_std: float = -0.5):
  return {"mean": init_mlp(key, (obs_size, *hidden, action_size), last_scale=0.01),
          "log_std": jnp.full(action_size, init_log_std)}


def policy_mean(params, obs):
  return mlp(params["mean"], obs)


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
