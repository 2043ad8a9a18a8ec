"""MoE layer forward+backward on CPU (fp32): our dropless and capacity paths against the peers' torch loop.

Shape (issue 4): d=1024, 32 routed experts of width 512, top-4, 1 shared expert, 8192 tokens.
Competitor: the way peers write a CPU MoE in PyTorch (DeepSeek-V3's reference code loops over experts too):
a per-expert loop of torch.mm with index_select and in-place index_add_, autograd for the backward, same
weights and inputs. Also measured in the same run: a plain fp32 2048^3 matmul in JAX (the peak).

Last line: JSON with jax_dropless_tokens_per_s, jax_capacity_tokens_per_s, torch_loop_tokens_per_s,
speedup_vs_torch_loop, fraction_of_matmul_peak (dropless useful FLOP/s over the matmul's), all fwd+bwd.
Usage: python benchmarks/moe_layer.py [--tokens=8192] [--repeats=3] [--block=N]
"""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import flags  # noqa: E402
from timing import best_time  # noqa: E402

import confspec  # noqa: E402
from pangu_jax.config import base_config  # noqa: E402
from pangu_jax.model import moe  # noqa: E402
from pangu_jax.train.peak import measure_matmul_flops, record_peak  # noqa: E402


def make_cfg(impl, block, gmm_impl="auto"):
  m = base_config().model
  m.update(hidden_size=1024, num_routed_experts=32, expert_ffn_dim=512, top_k=4, num_shared_experts=1,
           moe_impl=impl, capacity_factor=1.25, router_bias=False, norm_topk_prob=True, gmm_block_size=block,
           gmm_impl=gmm_impl)
  return m


def make_params(cfg, seed=0):
  d, e, f = cfg.hidden_size, cfg.num_routed_experts, cfg.expert_ffn_dim
  ks = jax.random.split(jax.random.key(seed), 5)
  return {
      "router": jax.random.normal(ks[0], (d, e)) / math.sqrt(d),
      "experts": {"w_in": jax.random.normal(ks[1], (e, d, 2 * f)) / math.sqrt(d),
                  "w_out": jax.random.normal(ks[2], (e, f, d)) / math.sqrt(f)},
      "shared": {"w_in": jax.random.normal(ks[3], (d, 2 * f)) / math.sqrt(d),
                 "w_out": jax.random.normal(ks[4], (f, d)) / math.sqrt(f)},
  }


def useful_flops(cfg, t):
  d, f, k, e = cfg.hidden_size, cfg.expert_ffn_dim, cfg.top_k, cfg.num_routed_experts
  per_token = 2 * d * e + k * (2 * d * 2 * f + 2 * f * d) + (2 * d * 2 * f + 2 * f * d)
  return 3 * t * per_token  # forward + backward


def jax_step(cfg, params, x, ct):
  def loss(p, x):
    return jnp.sum(moe.moe(p, x[None], cfg)[0][0] * ct)

  g = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return lambda: jax.block_until_ready(g(params, x))


def torch_loop_step(cfg, params, x, ct):
  tp = jax.tree.map(lambda a: torch.tensor(np.asarray(a), requires_grad=True), params)
  tx = torch.tensor(np.asarray(x), requires_grad=True)
  tct = torch.tensor(np.asarray(ct))
  k, e, f = cfg.top_k, cfg.num_routed_experts, cfg.expert_ffn_dim

  def forward():
    scores = torch.sigmoid(tx @ tp["router"])
    w, idx = torch.topk(scores, k, dim=-1)
    w = w / w.sum(-1, keepdim=True) * cfg.routed_scaling_factor
    out = torch.zeros_like(tx)
    for ex in range(e):
      tok, slot = torch.where(idx == ex)
      if tok.numel() == 0:
        continue
      h = torch.mm(tx.index_select(0, tok), tp["experts"]["w_in"][ex])
      y = torch.mm(torch.nn.functional.silu(h[:, :f]) * h[:, f:], tp["experts"]["w_out"][ex])
      out.index_add_(0, tok, y * w[tok, slot, None])
    hs = tx @ tp["shared"]["w_in"]
    out = out + (torch.nn.functional.silu(hs[:, :f]) * hs[:, f:]) @ tp["shared"]["w_out"]
    return out

  def step():
    for t in [tx, *jax.tree.leaves(tp)]:
      t.grad = None
    (forward() * tct).sum().backward()

  return step, forward


def main(argv):
  del argv
  torch.set_num_threads(os.cpu_count() or 1)
  t = _TOKENS.value
  cfg = make_cfg("dropless", _BLOCK.value, _GMM_IMPL.value)
  params = make_params(cfg)
  x = jax.random.normal(jax.random.key(10), (t, cfg.hidden_size))
  ct = jax.random.normal(jax.random.key(11), (t, cfg.hidden_size))

  # Same function: check the torch loop's forward against ours before timing anything.
  _, torch_fwd = torch_loop_step(cfg, params, x, ct)
  with torch.no_grad():
    ref = torch_fwd().numpy()
  ours = np.asarray(moe.moe(params, x[None], make_cfg("dense" if t <= 1024 else "dropless", _BLOCK.value))[0][0])
  rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
  print(f"torch loop vs ours, forward rel-L2: {rel:.2e}", flush=True)

  peak = measure_matmul_flops()
  record_peak(peak)
  print(f"fp32 2048^3 matmul (JAX): {peak / 1e9:.1f} GFLOP/s", flush=True)
  results = {}
  # The torch loop runs first: XLA's CPU thread pool can keep spinning after JAX work and slow torch down.
  for name, make in [("torch_loop", lambda: torch_loop_step(cfg, params, x, ct)[0]),
                     ("jax_dropless", lambda: jax_step(cfg, params, x, ct)),
                     ("jax_capacity", lambda: jax_step(make_cfg("capacity", _BLOCK.value), params, x, ct))]:
    fn = make()
    s = best_time(fn, _REPEATS.value)
    results[name] = s
    print(f"{name:>14}: {s * 1e3:8.1f} ms fwd+bwd, {t / s:9.0f} tokens/s, "
          f"{useful_flops(cfg, t) / s / 1e9:6.1f} useful GFLOP/s", flush=True)
  out = {
      "tokens": t, "block": _BLOCK.value, "gmm_impl": _GMM_IMPL.value,
      "jax_dropless_tokens_per_s": t / results["jax_dropless"],
      "jax_capacity_tokens_per_s": t / results["jax_capacity"],
      "torch_loop_tokens_per_s": t / results["torch_loop"],
      "speedup_vs_torch_loop": results["torch_loop"] / results["jax_dropless"],
      "fraction_of_matmul_peak": useful_flops(cfg, t) / results["jax_dropless"] / peak,
      "matmul_peak_gflops": peak / 1e9,
      "forward_rel_l2_vs_torch": rel,
  }
  print(json.dumps(out))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _TOKENS = flags.DEFINE_integer("tokens", 8192, "Tokens through the layer.", lower_bound=1)
  _REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats (best of).", lower_bound=1)
  _BLOCK = flags.DEFINE_integer("block", 256, "Dropless group block size.", lower_bound=1)
  _GMM_IMPL = flags.DEFINE_enum("gmm_impl", "auto", ["auto", "blocked", "scanned", "ragged"],
                                "Grouped-matmul implementation.")
  confspec.run(main)
