"""The whole model: causality, init statistics, cached and speculative decoding, jit equivalence."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import small_model_cfg

from pangu_jax.model import attention, decode, transformer

GQA = dict(attention="gqa", num_heads=4, num_kv_heads=2, head_dim=8)


def _scaled_params(cfg, seed=0, scale=4.0):
  """Fresh params with matrices scaled up so that logits are far from uniform."""
  params = transformer.init_params(jax.random.key(seed), cfg)

  def up(path, a):
    name = jax.tree_util.keystr(path)
    if a.ndim >= 2 and "embed" not in name and "router_bias" not in name:
      return a * scale
    return a

  return jax.tree_util.tree_map_with_path(up, params)


def _tokens(cfg, b=2, s=12, seed=1):
  return jax.random.randint(jax.random.key(seed), (b, s), 0, cfg.vocab_size)


@pytest.mark.parametrize("impl", ["dense", "dropless", "capacity"])
def test_causality(impl):
  # capacity with ample slots: with drops, capacity routing is not causal (drops depend on later tokens).
  cfg = small_model_cfg(moe_impl=impl, capacity_factor=100.0)
  params = _scaled_params(cfg)
  fwd = jax.jit(lambda p, t: transformer.forward(p, t, cfg))
  toks = _tokens(cfg)
  base = fwd(params, toks)
  t = 7
  changed = toks.at[:, t].set((toks[:, t] + 1) % cfg.vocab_size)
  out = fwd(params, changed)
  np.testing.assert_array_equal(out.logits[:, :t], base.logits[:, :t])
  assert not np.allclose(out.logits[:, t], base.logits[:, t])
  # MTP depth 0 at position i reads tokens up to i+1: unchanged before t-1.
  np.testing.assert_array_equal(out.mtp_logits[0, :, : t - 1], base.mtp_logits[0, :, : t - 1])
  assert not np.allclose(out.mtp_logits[0, :, t - 1], base.mtp_logits[0, :, t - 1])


def test_output_shapes_and_dtypes():
  cfg = small_model_cfg(mtp_depth=2)
  out = transformer.forward(transformer.init_params(jax.random.key(0), cfg), _tokens(cfg), cfg)
  chex.assert_shape(out.logits, (2, 12, cfg.vocab_size))
  chex.assert_shape(out.mtp_logits, (2, 2, 12, cfg.vocab_size))
  chex.assert_type(out.logits, jnp.float32)
  chex.assert_shape(out.stats.counts, (cfg.num_layers - cfg.num_dense_layers, 2, cfg.num_routed_experts))


def test_bfloat16_compute_runs_close_to_fp32():
  cfg32 = small_model_cfg()
  params = transformer.init_params(jax.random.key(0), cfg32)
  toks = _tokens(cfg32)
  l32 = transformer.forward(params, toks, cfg32).logits
  l16 = transformer.forward(params, toks, small_model_cfg(dtype="bfloat16")).logits
  chex.assert_type(l16, jnp.float32)
  rel = float(jnp.linalg.norm(l16 - l32) / jnp.linalg.norm(l32))
  assert rel < 5e-2


def test_tiny_init_statistics():
  cfg = small_model_cfg(hidden_size=256, num_layers=4, num_dense_layers=1, num_routed_experts=4,
                        expert_ffn_dim=128, dense_ffn_dim=256, vocab_size=512, q_lora_rank=64, kv_lora_rank=64,
                        num_heads=4, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32)
  params = transformer.init_params(jax.random.key(0), cfg)
  want = math.sqrt(1 / (2 * 256 * 4))
  np.testing.assert_allclose(np.std(params["embed"]), 0.5, rtol=0.02)
  for name, w in [("head", params["head"]), ("q_b", params["moe_layers"]["attn"]["q_b"]),
                  ("experts", params["moe_layers"]["moe"]["experts"]["w_in"]),
                  ("dense", params["dense_layers"]["mlp"]["w_out"]), ("router", params["moe_layers"]["moe"]["router"])]:
    np.testing.assert_allclose(np.std(w), want, rtol=0.03, err_msg=name)
    assert abs(float(np.mean(w))) < 0.05 * want, name
  std = transformer.init_params(jax.random.key(0), small_model_cfg(tiny_init=False, init_std=0.02))
  np.testing.assert_allclose(np.std(std["head"]), 0.02, rtol=0.05)


def test_dssn_gammas():
  cfg = small_model_cfg(num_layers=9, num_dense_layers=2, dssn_c_attn=0.283, dssn_c_mlp=0.432)
  p = transformer.init_params(jax.random.key(0), cfg)
  for stack in ("dense_layers", "moe_layers"):
    np.testing.assert_allclose(p[stack]["post_attn_norm"], 0.283 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(p[stack]["post_mlp_norm"], 0.432 / 3.0, rtol=1e-6)
    np.testing.assert_array_equal(p[stack]["attn_norm"], 1.0)
    np.testing.assert_array_equal(p[stack]["mlp_norm"], 1.0)
  plain = transformer.init_params(jax.random.key(0), small_model_cfg(sandwich_norm=False))
  assert "post_attn_norm" not in plain["moe_layers"] and "post_mlp_norm" not in plain["dense_layers"]


def test_dssn_output_std_at_init():
  """With DSSN the sub-layer contribution to the residual has RMS ~ c / sqrt(L) (the post norm's gamma)."""
  from pangu_jax.model.norms import rms_norm

  cfg = small_model_cfg(num_layers=16)
  gamma = jnp.full((cfg.hidden_size,), cfg.dssn_c_mlp / 4.0)
  y = rms_norm(jax.random.normal(jax.random.key(0), (64, cfg.hidden_size)) * 17.0, gamma, cfg.norm_eps)
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(y))), cfg.dssn_c_mlp / 4.0, rtol=1e-3)


@pytest.mark.parametrize("variant", [dict(), dict(q_lora_rank=0, num_dense_layers=0), dict(moe_impl="dense"), GQA],
                         ids=["mla", "mla_no_q_lora", "mla_dense_moe", "gqa"])
def test_cached_decoding_equals_full_forward(variant):
  cfg = small_model_cfg(**variant)
  params = _scaled_params(cfg, scale=2.0)
  toks = _tokens(cfg, b=2, s=10)
  full = transformer.forward(params, toks, cfg).logits
  cache = transformer.init_cache(cfg, 2, 16)
  step = jax.jit(lambda p, t, c, s: transformer.forward_cached(p, t, c, s, cfg))
  logits, _, cache = step(params, toks[:, :4], cache, jnp.int32(0))  # prefill 4
  got = [logits]
  for i in range(4, 10):  # then one token at a time
    logits, _, cache = step(params, toks[:, i : i + 1], cache, jnp.int32(i))
    got.append(logits)
  got = jnp.concatenate(got, axis=1)
  np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(jnp.argmax(got, -1), jnp.argmax(full, -1))


def test_mtp_cached_equals_mtp_forward():
  cfg = small_model_cfg()
  params = _scaled_params(cfg, scale=2.0)
  toks = _tokens(cfg, b=1, s=9)
  out = transformer.forward(params, toks, cfg)
  cache = transformer.init_cache(cfg, 1, 16)
  mlog, _ = transformer.mtp_cached(params, out.hidden[:, :8], toks[:, 1:9], cache, jnp.int32(0), cfg)
  np.testing.assert_allclose(mlog, out.mtp_logits[0, :, :8], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", [dict(), GQA], ids=["mla", "gqa"])
def test_greedy_generation_is_argmax_of_full_forward(variant):
  cfg = small_model_cfg(**variant)
  params = _scaled_params(cfg, scale=2.0)
  prompt = _tokens(cfg, b=2, s=5)
  out = decode.generate(params, prompt, cfg, 6)
  # Each generated token is the argmax of the full (uncached) forward at the previous position; by causality
  # (tested above) one forward over the whole output gives every prefix's logits.
  logits = transformer.forward(params, out, cfg).logits
  np.testing.assert_array_equal(out[:, 5:], jnp.argmax(logits[:, 4:-1], -1))


def test_sampling_respects_top_k_and_seed():
  cfg = small_model_cfg()
  params = _scaled_params(cfg, scale=2.0)
  prompt = _tokens(cfg, b=1, s=3)
  a = decode.generate(params, prompt, cfg, 8, temperature=1.0, top_k=1, seed=3)
  greedy = decode.generate(params, prompt, cfg, 8)
  np.testing.assert_array_equal(a, greedy)  # top-1 sampling is greedy
  s1 = decode.generate(params, prompt, cfg, 8, temperature=1.5, seed=1)
  s2 = decode.generate(params, prompt, cfg, 8, temperature=1.5, seed=1)
  np.testing.assert_array_equal(s1, s2)


@pytest.mark.parametrize("vocab", [3, 64])
def test_speculative_equals_greedy(vocab):
  # vocab 3: the MTP draft is often right, so both the accept and the reject path run.
  cfg = small_model_cfg(vocab_size=vocab)
  params = _scaled_params(cfg, seed=vocab, scale=2.0)
  prompt = np.asarray(_tokens(cfg, b=1, s=4, seed=2))
  greedy = np.asarray(decode.generate(params, prompt, cfg, 20))
  spec, stats = decode.speculative_generate(params, prompt, cfg, 20)
  np.testing.assert_array_equal(spec, greedy)
  assert 1.0 <= stats["acceptance_length"] <= 2.0
  if vocab == 3:
    assert 1.0 < stats["acceptance_length"] < 2.0, stats  # both paths exercised


def test_jit_and_eager_agree():
  cfg = small_model_cfg()
  params = _scaled_params(cfg)
  toks = _tokens(cfg)
  jitted = jax.jit(lambda p, t: transformer.forward(p, t, cfg))(params, toks)
  with jax.disable_jit():
    eager = transformer.forward(params, toks, cfg)
  for a, b in [(jitted.logits, eager.logits), (jitted.mtp_logits, eager.mtp_logits)]:
    assert float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b)) < 1e-5  # fp32 (XLA fuses differently under jit)
    np.testing.assert_array_equal(jnp.argmax(a, -1), jnp.argmax(b, -1))


@pytest.mark.parametrize("remat", ["full", "fine"])
def test_remat_policies_leave_gradients_unchanged(remat):
  cfg = small_model_cfg()
  params = _scaled_params(cfg, scale=1.0)
  toks = _tokens(cfg)

  def loss(p, remat):
    return jnp.mean(transformer.forward(p, toks, cfg, remat=remat).logits ** 2)

  g0 = jax.jit(jax.grad(lambda p: loss(p, "none")))(params)
  g1 = jax.jit(jax.grad(lambda p: loss(p, remat)))(params)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _rope_f64(x, pos, theta):
  """Rotate-half RoPE in float64 numpy over the last dim of x (B, S, N, D), positions (S,)."""
  d = x.shape[-1]
  ang = pos[:, None] * theta ** (-np.arange(0, d, 2) / d)
  cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
  rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], -1)
  return x * cos[None, :, None] + rot * sin[None, :, None]


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_gqa_matches_torch_sdpa_with_numpy_rope(kv_heads):
  """Our GQA (module docstring of pangu_jax.model.attention) against torch's scaled_dot_product_attention(
  is_causal=True, enable_gqa=True) in float64, RoPE applied in numpy: MQA, GQA and MHA."""
  import torch  # noqa: PLC0415

  cfg = small_model_cfg(**{**GQA, "num_kv_heads": kv_heads})
  p = jax.tree.map(lambda a: a * 8.0, transformer.init_params(jax.random.key(0), cfg)["moe_layers"]["attn"])
  p = jax.tree.map(lambda a: a[0], p)
  b, s, h, hd = 2, 7, cfg.num_heads, cfg.head_dim
  x = jax.random.normal(jax.random.key(1), (b, s, cfg.hidden_size))
  got = attention.gqa(p, x, jnp.broadcast_to(jnp.arange(s), (b, s)), cfg)
  xn, w = np.asarray(x, np.float64), {k: np.asarray(v, np.float64) for k, v in p.items()}
  q = _rope_f64((xn @ w["q"]).reshape(b, s, h, hd), np.arange(s), cfg.rope_theta)
  k = _rope_f64((xn @ w["k"]).reshape(b, s, kv_heads, hd), np.arange(s), cfg.rope_theta)
  v = (xn @ w["v"]).reshape(b, s, kv_heads, hd)
  t = lambda a: torch.from_numpy(a).transpose(1, 2)  # (B, N, S, D)
  o = torch.nn.functional.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=True, enable_gqa=True,
                                                       scale=hd**-0.5)
  want = o.transpose(1, 2).reshape(b, s, h * hd).numpy() @ w["o"]
  got = np.asarray(got, np.float64)
  assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-6  # float32 against float64
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_gqa_yarn_rotates_the_whole_head_and_corrects_the_softmax_scale():
  """Under YaRN, GQA's rotary frequencies cover head_dim and the softmax scale is 1/sqrt(head_dim) x m(s, a)^2
  (the cos/sin factor m(s, mscale) / m(s, mscale_all_dim) is 1 here: mscale = mscale_all_dim)."""
  cfg = small_model_cfg(**GQA, rope_scaling="yarn", rope_factor=4.0, rope_mscale=1.0, rope_mscale_all_dim=1.0,
                        rope_original_max_len=16)
  inv, factor = attention.rope_frequencies(cfg)
  assert inv.shape == (cfg.head_dim // 2,) and factor == 1.0
  assert attention.softmax_scale(cfg) == pytest.approx(cfg.head_dim**-0.5 * (0.1 * math.log(4.0) + 1) ** 2)
  cos, _ = attention.rope_tables(jnp.arange(5)[None], cfg)
  assert cos.shape == (1, 5, cfg.head_dim)


def test_gqa_init_params_and_flops():
  """TinyInit std for q, k, v, o; count_params from the tree; attention FLOPs use H x (head_dim + head_dim)."""
  from pangu_jax import flops  # noqa: PLC0415
  from pangu_jax.model.init import unbox  # noqa: PLC0415
  from pangu_jax.params import count_params  # noqa: PLC0415

  cfg = small_model_cfg(**GQA, hidden_size=256, num_layers=4)
  a = {k: v[None] for k, v in unbox(attention.init_attention(jax.random.key(0), cfg, jnp.float32)).items()}
  d, h, g, hd = 256, 4, 2, 8
  assert {k: v.shape[1:] for k, v in a.items()} == {"q": (d, h * hd), "k": (d, g * hd), "v": (d, g * hd),
                                                     "o": (h * hd, d)}
  for name, w in a.items():
    np.testing.assert_allclose(np.std(w), math.sqrt(1 / (2 * 256 * 4)), rtol=0.05, err_msg=name)
  c = count_params(cfg)
  assert c["breakdown"]["attention"] == cfg.num_layers * (2 * d * h * hd + 2 * d * g * hd)
  seq = 64
  layers = cfg.num_layers + cfg.mtp_depth
  assert flops.attention_flops_per_token(cfg, seq) == layers * 2 * h * (hd + hd) * seq * 0.5
  mla = small_model_cfg(hidden_size=256, num_layers=4)
  assert flops.attention_flops_per_token(mla, seq) == layers * 2 * mla.num_heads * (8 + 8 + 8) * seq * 0.5


def test_gqa_config_errors_are_one_line():
  from confspec import ConfigError  # noqa: PLC0415
  from pangu_jax.config import base_config, validate_config, validate_model  # noqa: PLC0415

  cfg = base_config()
  cfg.model.update(attention="gqa", num_heads=4, num_kv_heads=3)
  with pytest.raises(ConfigError, match=r"^config\.model\.num_kv_heads: 3 must divide model\.num_heads \(4\); "
                     r"allowed: 1, 2, 4$"):
    validate_config(cfg)
  with pytest.raises(ConfigError, match=r"^config\.model\.num_kv_heads: 3 must divide"):
    validate_model(cfg.model)
  cfg.model.update(num_kv_heads=2, head_dim=7)
  with pytest.raises(ConfigError, match=r"^config\.model\.head_dim: 7 must be even"):
    validate_config(cfg)
  cfg.model.attention = "mha"
  with pytest.raises(ConfigError, match=r"^config\.model\.attention: 'mha' is not allowed; allowed: one of 'mla', "
                     r"'gqa'$"):
    validate_config(cfg)
  cfg.model.update(attention="mla", num_kv_heads=3)  # the GQA fields are not read under MLA
  validate_config(cfg)
