"""The parity suite: JAX reference vs exported torch, per layer, across architecture variants and lowerings."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from conftest import REPO, small_model_cfg  # noqa: E402

from npu_backend.fused import reference  # noqa: E402
from npu_backend.parity import far_from_uniform, routing_agreement, run_parity  # noqa: E402
from pangu_jax.config import base_config  # noqa: E402
from pangu_jax.model import transformer  # noqa: E402

VARIANTS = {
    "dense_first+mtp+sigmoid+bias+dropless": dict(),
    "softmax+no_bias+dense_impl": dict(router_score="softmax", router_bias=False, moe_impl="dense"),
    "sigmoid+no_bias+capacity": dict(router_bias=False, moe_impl="capacity", capacity_factor=4.0),
    "no_dense_first+no_q_lora+mtp2": dict(num_dense_layers=0, q_lora_rank=0, mtp_depth=2),
    "sigmoid+no_renorm": dict(norm_topk_prob=False, routed_scaling_factor=2.5),
    "gqa": dict(attention="gqa", num_heads=4, num_kv_heads=2, head_dim=8),
}


def _setup(variant, seed=0):
  cfg = base_config()
  cfg.model = small_model_cfg(**VARIANTS[variant])
  params = transformer.init_params(jax.random.key(seed), cfg.model)
  tokens = np.asarray(jax.random.randint(jax.random.key(seed + 1), (2, 16), 0, cfg.model.vocab_size), np.int32)
  return cfg, far_from_uniform(params, cfg.model, tokens), tokens


@pytest.mark.parametrize("lowering", ["none", "reference"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fp32_parity_per_layer(variant, lowering):
  cfg, params, tokens = _setup(variant)
  report = run_parity(cfg, params, tokens, device="cpu", lowering=lowering)
  assert report["passed"], json.dumps(report["layers"])
  assert report["router_agreement"] == 1.0 and report["max_token_kl"] <= 2e-4
  assert len(report["layers"]) == cfg.model.num_layers
  if lowering == "reference":  # the fused ops really ran
    assert {"rms_norm", "rotary", "swiglu", "attention_core"} <= set(report["lowered_regions"])
    if cfg.model.moe_impl == "dropless":
      assert {"moe_permute", "grouped_matmul", "moe_unpermute"} <= set(report["lowered_regions"])


def test_perturbed_weight_fails_and_names_the_layer():
  cfg, params, tokens = _setup("dense_first+mtp+sigmoid+bias+dropless")
  # MoE stack index 1 = global layer 2 (one dense layer first)
  report = run_parity(cfg, params, tokens, device="cpu", lowering="none", perturb=("moe_layers.attn.o", 1, 1e-3))
  assert not report["passed"] and report["first_failing_layer"] == 2
  assert [r["passed"] for r in report["layers"]] == [True, True, False]


@pytest.mark.parametrize("variant", ["dense_first+mtp+sigmoid+bias+dropless", "softmax+no_bias+dense_impl"])
def test_bfloat16_parity(variant):
  """bf16 on both sides (the binary also disables XLA's excess precision; in-process we cannot, so this checks
  the looser default): router agreement >= 0.98, and rel-L2 <= 2e-2 over tokens whose routing agreed."""
  cfg, params, tokens = _setup(variant)
  report = run_parity(cfg, params, tokens, dtype="bfloat16", device="cpu", lowering="none")
  assert report["router_agreement"] >= 0.98, json.dumps(report["layers"])
  assert report["passed"], json.dumps(report["layers"])
  assert report["tokens_compared"] >= 0.9 * report["tokens"]


def test_checkpoint_trained_for_a_few_steps(tmp_path):
  from pangu_jax.train.loop import train
  from pangu_jax.workdir import load_params_for_inference

  cfg = base_config()
  cfg.model = small_model_cfg(vocab_size=256)
  cfg.train.update(steps=4, batch_size=4, seq_len=16, eval_every=4, eval_batches=1, checkpoint_every=4,
                   warmup_steps=1, ep_group_size=2, learning_rate=1e-2)
  train(cfg, str(tmp_path), progress=False)
  cfg2, params = load_params_for_inference(str(tmp_path))
  tokens = np.asarray(jax.random.randint(jax.random.key(3), (2, 16), 0, cfg.model.vocab_size), np.int32)
  report = run_parity(cfg2, far_from_uniform(params, cfg2.model, tokens), tokens, device="cpu", lowering="reference")
  assert report["passed"], json.dumps(report["layers"])


# The binary with the mocked NPU lowering, in float32 (tight bound) and bfloat16. Its plain CPU path runs in the
# quick demo's parity stage (tests/experiments/test_demo.py) and plain bfloat16 numerics in-process above: two
# binary runs instead of four (each is a ~30 s subprocess; the suite has a time budget).
@pytest.mark.parametrize("extra", [["--mock_npu"], ["--mock_npu", "--dtype=bfloat16"]])
def test_parity_binary_on_the_tiny_preset(extra):
  proc = subprocess.run([sys.executable, "-m", "npu_backend.parity", "--config=configs/pangu/tiny.py", "--json",
                         *extra], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  bound = 2e-2 if "--dtype=bfloat16" in extra else 1e-5
  assert report["passed"] and report["max_rel_err"] <= bound and len(report["layers"]) == 4
  if "--mock_npu" in extra:
    assert report["backend"] == "npu" and "mock" in report["backend_reason"]
    assert report["lowering"] == "torch_npu" and report["lowered_regions"]["grouped_matmul"] > 0


def test_routing_agreement_counts_each_flip_once():
  """A token that flips in layer 0 and therefore differs in layer 1 is one flip, not two; checked against a naive
  per-token count of first disagreements. Expert sets compare as sets (order within top-k is irrelevant)."""
  rng = np.random.default_rng(0)
  layers, b, s, e, k = 3, 4, 50, 8, 2
  ref = np.stack([np.stack([np.stack([rng.choice(e, k, replace=False) for _ in range(s)]) for _ in range(b)])
                  for _ in range(layers)])
  got = ref[..., ::-1].copy()  # same sets, reversed order
  got[0, 0, 3] = (ref[0, 0, 3] + 1) % e  # flip in layer 0 ...
  got[1, 0, 3] = (ref[1, 0, 3] + 1) % e  # ... and its consequence in layer 1
  got[2, 0, 3] = (ref[2, 0, 3] + 1) % e
  got[1, 2, 7] = (ref[1, 2, 7] + 1) % e  # a new flip in layer 1
  got[2, 1, 9] = (ref[2, 1, 9] + 1) % e  # and one in layer 2
  rep = routing_agreement(ref, got)
  n = b * s
  alive, first = set(range(n)), []
  for li in range(layers):  # naive: count first disagreements among tokens still agreeing
    bad = {t for t in alive if set(ref[li].reshape(n, k)[t]) != set(got[li].reshape(n, k)[t])}
    first.append((len(alive) - len(bad)) / len(alive))
    alive -= bad
  np.testing.assert_allclose([r["agreement"] for r in rep], first)
  assert [r["agreement"] for r in rep] == [1 - 1 / 200, 1 - 1 / 199, 1 - 1 / 198]
  assert [r["agreement_all_tokens"] for r in rep] == [1 - 1 / 200, 1 - 2 / 200, 1 - 2 / 200]
  assert rep[-1]["mask"].sum() == 197 and not rep[-1]["mask"][0, 3]


def test_reference_op_conventions():
  """Index conventions stated by the op-plugin docs, checked directly."""
  x = torch.randn(5, 8)
  y, idx, row_idx = reference.npu_moe_gating_top_k_softmax(x, k=2)
  np.testing.assert_array_equal(row_idx.numpy(), np.arange(10).reshape(2, 5).T)
  np.testing.assert_allclose(y.numpy(), torch.softmax(x, -1).topk(2).values.numpy(), rtol=1e-6)
  xs, w = torch.randn(7, 3), torch.randn(2, 3, 4)
  counts = torch.tensor([3, 4])
  a = reference.npu_grouped_matmul([xs], [w], group_list=counts, group_list_type=1)[0]
  b = reference.npu_grouped_matmul([xs], list(w.unbind(0)), group_list=counts.cumsum(0), group_list_type=0)[0]
  np.testing.assert_allclose(a.numpy(), b.numpy())
  np.testing.assert_allclose(a[:3].numpy(), (xs[:3] @ w[0]).numpy(), rtol=1e-6)
  y, rstd = reference.npu_rms_norm(x, torch.ones(8), epsilon=1e-6)
  np.testing.assert_allclose(rstd.numpy()[:, 0], 1 / np.sqrt((x.numpy() ** 2).mean(-1) + 1e-6), rtol=1e-5)


def test_reference_fusion_attention_groups_query_heads_like_sdpa():
  """GQA through the fused op's reference: key/value with fewer heads, grouped as torch's enable_gqa groups them."""
  g = torch.Generator().manual_seed(0)
  q, k, v = (torch.randn(2, 5, n, 8, generator=g, dtype=torch.float64) for n in (6, 2, 2))
  mask = torch.ones(5, 5, dtype=torch.bool).triu(1)
  got = reference.npu_fusion_attention(q, k, v, 6, "BSND", atten_mask=mask, scale=0.3)[0]
  want = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                          is_causal=True, enable_gqa=True, scale=0.3).transpose(1, 2)
  np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=2e-6)  # the reference computes in fp32
