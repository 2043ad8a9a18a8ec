"""Hugging Face checkpoints both ways, checked against transformers' own DeepseekV3ForCausalLM (a test-only
dependency): tiny random models with non-unit norms, a selection bias that changes the chosen experts, several
n_group / topk_group, YaRN on and off, q-LoRA on and off, an FP8-quantised copy; export our params and load them
with AutoModelForCausalLM; bad directories get one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM

from pangu_jax import hf_checkpoint as hf
from pangu_jax.config import base_config, validate_config
from pangu_jax.convert import convert, derive_config
from pangu_jax.model import transformer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEQ = 24
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "mscale": 1.0, "mscale_all_dim": 0.8,
        "original_max_position_embeddings": 8, "beta_fast": 32, "beta_slow": 1}  # 8 x 8 = max_position_embeddings


def hf_config(**kw) -> DeepseekV3Config:
  base = dict(vocab_size=300, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=3,
              num_attention_heads=2, num_key_value_heads=2, n_shared_experts=1, n_routed_experts=8, kv_lora_rank=8,
              q_lora_rank=12, qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, n_group=1, topk_group=1,
              num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=64, rms_norm_eps=1e-6,
              routed_scaling_factor=2.5, rope_interleave=True, num_nextn_predict_layers=0, initializer_range=0.15,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
  base.update(kw)
  cfg = DeepseekV3Config(**base)
  cfg._attn_implementation = "eager"
  return cfg


def random_hf_model(cfg, seed=0) -> DeepseekV3ForCausalLM:
  """transformers' model with its random init, then non-unit norms and a selection bias large enough to change
  which experts are chosen."""
  torch.manual_seed(seed)
  model = DeepseekV3ForCausalLM(cfg).eval()
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.uniform_(0.5, 1.5)
    for name, b in model.named_buffers():
      if name.endswith("e_score_correction_bias"):
        b.uniform_(-0.15, 0.15)
  return model


def hf_logits_and_experts(model, tokens):
  """fp32 logits and each MoE layer's chosen experts (sorted per token) from transformers."""
  chosen = []
  hooks = [m.register_forward_hook(lambda mod, inp, out: chosen.append(torch.sort(out[2], -1).values.numpy()))
           for n, m in model.named_modules() if n.endswith("mlp.gate")]
  with torch.no_grad():
    logits = model(torch.from_numpy(np.asarray(tokens, np.int64))).logits.numpy()
  for h in hooks:
    h.remove()
  return logits, np.stack(chosen)


def jax_logits_and_experts(params, cfg_model, tokens):
  out = transformer.forward(jax.tree.map(jax.numpy.asarray, params), tokens, cfg_model)
  idx = np.sort(np.asarray(out.stats.topk_idx), -1).reshape(out.stats.topk_idx.shape[0], -1, cfg_model.top_k)
  return np.asarray(out.logits), idx


def rel_l2(a, b) -> float:
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def tokens_for(cfg, seed=1):
  return np.asarray(jax.random.randint(jax.random.key(seed), (2, SEQ), 0, cfg.vocab_size), np.int32)


def import_dir(path, dtype="float32"):
  cfg, fmt = derive_config(str(path), dtype)
  return cfg, hf.import_params(hf.HFReader(str(path)), cfg.model, fmt)


IMPORT_CASES = {
    "qlora_nogroups": dict(),
    "noqlora_groups4x2_yarn": dict(q_lora_rank=None, n_group=4, topk_group=2, rope_parameters=YARN),
    "qlora_groups2x1_yarn_half_rope": dict(n_group=2, topk_group=1, rope_parameters=YARN, rope_interleave=False),
}


@pytest.mark.parametrize("case", list(IMPORT_CASES))
def test_import_matches_transformers(tmp_path, case):
  cfg = hf_config(**IMPORT_CASES[case])
  model = random_hf_model(cfg)
  model.save_pretrained(tmp_path, max_shard_size="40KB")  # several shards and the index file
  assert (tmp_path / hf.INDEX).exists()
  ours, params = import_dir(tmp_path)
  tokens = tokens_for(cfg)
  want, want_experts = hf_logits_and_experts(model, tokens)
  got, got_experts = jax_logits_and_experts(params, ours.model, tokens)
  assert rel_l2(got, want) <= 1e-5
  np.testing.assert_array_equal(got_experts, want_experts)
  # The bias matters: without it transformers would have chosen other experts.
  with torch.no_grad():
    for n, b in model.named_buffers():
      if n.endswith("e_score_correction_bias"):
        b.zero_()
  assert (hf_logits_and_experts(model, tokens)[1] != want_experts).any()


def _fp8_quantise(src, dst, block=(16, 16)):
  """A DeepSeek-style FP8 copy of a saved model, made here: every 2-D projection weight as float8_e4m3fn with a
  float32 `weight_scale_inv` per block (amax / 448), the rest unchanged. Returns the dequantised tensors."""
  os.makedirs(dst)
  deq = {}
  out = {}
  with safe_open(os.path.join(src, "model.safetensors"), "pt") as f:
    for name in f.keys():
      t = f.get_tensor(name)
      quantise = (t.ndim == 2 and name.endswith("proj.weight"))
      if not quantise:
        out[name] = t
        continue
      r, c = -(-t.shape[0] // block[0]), -(-t.shape[1] // block[1])
      padded = torch.zeros(r * block[0], c * block[1])
      padded[: t.shape[0], : t.shape[1]] = t
      blocks = padded.reshape(r, block[0], c, block[1])
      scale = blocks.abs().amax(dim=(1, 3)) / 448.0
      q = (blocks / scale[:, None, :, None]).to(torch.float8_e4m3fn)
      back = (q.float() * scale[:, None, :, None]).reshape(padded.shape)[: t.shape[0], : t.shape[1]]
      out[name] = q.reshape(padded.shape)[: t.shape[0], : t.shape[1]].contiguous()
      out[name.replace(".weight", ".weight_scale_inv")] = scale.contiguous()
      deq[name] = back.contiguous()
  save_file(out, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(src, "config.json")) as f:
    conf = json.load(f)
  conf["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                 "weight_block_size": list(block)}
  with open(os.path.join(dst, "config.json"), "w") as f:
    json.dump(conf, f)
  return deq


def test_import_fp8_matches_transformers_on_the_dequantised_weights(tmp_path):
  cfg = hf_config(n_group=2, topk_group=1, rope_parameters=YARN)
  model = random_hf_model(cfg, seed=3)
  model.save_pretrained(tmp_path / "bf")
  deq = _fp8_quantise(tmp_path / "bf", tmp_path / "fp8")
  # The reference: transformers loading the dequantised tensors (the checkpoint's names, experts included).
  tensors = _all_tensors(tmp_path / "bf") | deq
  os.makedirs(tmp_path / "deq")
  save_file(tensors, str(tmp_path / "deq" / "model.safetensors"), metadata={"format": "pt"})
  (tmp_path / "deq" / "config.json").write_text((tmp_path / "bf" / "config.json").read_text())
  model = DeepseekV3ForCausalLM.from_pretrained(tmp_path / "deq", dtype=torch.float32,
                                                attn_implementation="eager").eval()
  ours, params = import_dir(tmp_path / "fp8")
  tokens = tokens_for(cfg, seed=2)
  want, want_experts = hf_logits_and_experts(model, tokens)
  got, got_experts = jax_logits_and_experts(params, ours.model, tokens)
  assert rel_l2(got, want) <= 1e-5
  np.testing.assert_array_equal(got_experts, want_experts)
  assert derive_config(str(tmp_path / "fp8"))[0].model.param_dtype == "bfloat16"  # FP8 defaults to bf16


def our_params(cfg_model, seed=0):
  """Our init with every norm gamma and router bias made non-unit / non-zero (a fresh export would hide a
  misnamed norm: every gamma is 1)."""
  params = transformer.init_params(jax.random.key(seed), cfg_model)
  keys = iter(jax.random.split(jax.random.key(seed + 100), 1000))

  def perturb(path, a):
    name = jax.tree_util.keystr(path)
    if "norm" in name:
      return jax.random.uniform(next(keys), a.shape, a.dtype, 0.5, 1.5)
    if "router_bias" in name:
      return jax.random.uniform(next(keys), a.shape, a.dtype, -0.15, 0.15)
    return a * 4.0  # TinyInit's stds are tiny at this width; larger weights give routers something to choose

  return jax.tree_util.tree_map_with_path(perturb, params)


def our_model_cfg(**kw):
  cfg = base_config()
  cfg.model.update(dict(vocab_size=300, hidden_size=32, num_heads=2, q_lora_rank=12, kv_lora_rank=8,
                        qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, num_layers=3, num_dense_layers=1,
                        expert_ffn_dim=16, dense_ffn_dim=48, num_routed_experts=8, top_k=2, norm_eps=1e-6,
                        routed_scaling_factor=2.5, sandwich_norm=False, mtp_depth=0, max_seq_len=64))
  cfg.model.update(kw)
  cfg.train.seq_len = 32
  return validate_config(cfg).model


EXPORT_CASES = {
    "qlora_nogroups": dict(),
    "noqlora_groups4x2_yarn": dict(q_lora_rank=0, expert_groups=4, topk_groups=2, rope_scaling="yarn",
                                   rope_factor=8.0, rope_original_max_len=8, rope_mscale_all_dim=1.0),
    "qlora_groups2x1_yarn_mtp": dict(expert_groups=2, topk_groups=1, rope_scaling="yarn", rope_factor=8.0,
                                     rope_original_max_len=8, rope_mscale=1.0, rope_mscale_all_dim=0.8, mtp_depth=1),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_export_loads_in_transformers_and_matches(tmp_path, case):
  m = our_model_cfg(**EXPORT_CASES[case])
  params = our_params(m)
  hf.write_hf_dir(params, m, str(tmp_path / "hf"), max_shard_bytes=60_000)
  model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True,
                                                     dtype=torch.float32, attn_implementation="eager")
  assert info["missing_keys"] == [] or info["missing_keys"] == set()
  unexpected = sorted(info["unexpected_keys"])
  assert all(k.startswith(f"model.layers.{m.num_layers}.") for k in unexpected), unexpected[:3]
  assert bool(unexpected) == (m.mtp_depth > 0)  # only the MTP layer, which transformers has no module for
  tokens = tokens_for(m, seed=4)
  want, want_experts = hf_logits_and_experts(model.eval(), tokens)
  got, got_experts = jax_logits_and_experts(params, m, tokens)
  assert rel_l2(got, want) <= 1e-5
  np.testing.assert_array_equal(got_experts, want_experts)
  if m.mtp_depth:
    _check_mtp_against_deepseek_formula(model, tmp_path / "hf", params, m, tokens)


def _check_mtp_against_deepseek_formula(model, hf_dir, params, m, tokens):
  """DeepSeek-V3's MTP depth 1 written out with transformers' own decoder layer on the exported tensors:
  h' = Block(eh_proj([enorm(Emb(t_{i+1})); hnorm(h_i)])), logits = shared_head.head(shared_head.norm(h'))."""
  from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3DecoderLayer

  L = m.num_layers
  pre = f"model.layers.{L}."
  sd = {}
  for f in os.listdir(hf_dir):
    if f.endswith(".safetensors"):
      with safe_open(os.path.join(hf_dir, f), "pt") as fh:
        sd.update({k: fh.get_tensor(k) for k in fh.keys() if k.startswith(pre)})
  layer = DeepseekV3DecoderLayer(model.config, layer_idx=L).eval()
  own = {k[len(pre):]: v for k, v in sd.items() if k[len(pre):].split(".")[0] in
         ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm") and ".experts." not in k}
  experts = range(m.num_routed_experts)
  ex = lambda e, w: sd[f"{pre}mlp.experts.{e}.{w}.weight"]
  own["mlp.experts.gate_up_proj"] = torch.stack([torch.cat([ex(e, "gate_proj"), ex(e, "up_proj")]) for e in experts])
  own["mlp.experts.down_proj"] = torch.stack([ex(e, "down_proj") for e in experts])
  layer.load_state_dict(own)
  norm = lambda name, x: _rms(x, sd[pre + name], m.norm_eps)
  t = torch.from_numpy(np.asarray(tokens, np.int64))
  last = []
  hook = model.model.layers[-1].register_forward_hook(lambda mod, inp, out: last.append(out))
  with torch.no_grad():
    model(t)
    hook.remove()
    h = last[0][0] if isinstance(last[0], tuple) else last[0]  # h^0: the last block's output (our definition)
    nxt = torch.roll(t, -1, dims=1)
    e = torch.nn.functional.embedding(nxt, sd[pre + "embed_tokens.weight"])
    z = torch.cat([norm("enorm.weight", e), norm("hnorm.weight", h)], -1) @ sd[pre + "eh_proj.weight"].T
    pos = torch.arange(t.shape[1])[None].expand(t.shape[0], -1)
    cos_sin = model.model.rotary_emb(z, pos)
    mask = torch.full((t.shape[1], t.shape[1]), float("-inf")).triu(1)[None, None]
    y = layer(z, attention_mask=mask, position_ids=pos, position_embeddings=cos_sin)
    y = y[0] if isinstance(y, tuple) else y
    want = (_rms(y, sd[pre + "shared_head.norm.weight"], m.norm_eps) @ sd[pre + "shared_head.head.weight"].T).numpy()
  got = np.asarray(transformer.forward(jax.tree.map(jax.numpy.asarray, params), tokens, m).mtp_logits[0])
  assert rel_l2(got[:, :-1], want[:, :-1]) <= 1e-5  # the last position sees a wrapped-around token on both sides


def _rms(x, w, eps):
  xf = x.float()
  return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_round_trip_is_bit_equal(tmp_path, dtype):
  """HF dir -> import -> export -> HF dir: the same tensors, bit for bit (sharded both times)."""
  cfg = hf_config(n_group=2, topk_group=1, num_nextn_predict_layers=0)
  model = random_hf_model(cfg).to(getattr(torch, dtype))
  for mod in model.modules():  # DeepSeek-V3 ships the selection bias in float32 whatever the weights' dtype
    if hasattr(mod, "e_score_correction_bias"):
      mod.e_score_correction_bias.data = mod.e_score_correction_bias.data.float()
  model.save_pretrained(tmp_path / "a", max_shard_size="40KB")
  ours, params = import_dir(tmp_path / "a", dtype)
  hf.write_hf_dir(params, ours.model, str(tmp_path / "b"), max_shard_bytes=40_000)
  a, b = _all_tensors(tmp_path / "a"), _all_tensors(tmp_path / "b")
  assert set(a) == set(b)
  for k in a:
    assert a[k].dtype == b[k].dtype, k
    assert torch.equal(a[k].view(torch.uint8) if a[k].dtype == torch.bfloat16 else a[k], b[k].view(torch.uint8)
                       if b[k].dtype == torch.bfloat16 else b[k]), k


def _all_tensors(d):
  out = {}
  for f in sorted(os.listdir(d)):
    if f.endswith(".safetensors"):
      with safe_open(os.path.join(d, f), "pt") as fh:
        out.update({k: fh.get_tensor(k) for k in fh.keys()})
  return out


def test_sandwich_model_round_trips_with_openpangu_names(tmp_path):
  """Our sandwich-norm model (with MTP) -> pangu_ultra_moe dir -> import -> export: bit-equal, documented names."""
  m = our_model_cfg(sandwich_norm=True, mtp_depth=1)
  params = our_params(m, seed=5)
  hf.write_hf_dir(params, m, str(tmp_path / "a"))
  conf = json.loads((tmp_path / "a" / "config.json").read_text())
  assert conf["model_type"] == "pangu_ultra_moe" and conf["sandwich_norm"] is True
  assert conf["architectures"] == ["PanguUltraMoEForCausalLM"] and conf["router_enable_expert_bias"] is True
  a = _all_tensors(tmp_path / "a")
  for n in ("input_layernorm", "post_attention_layernorm", "pre_mlp_layernorm", "post_mlp_layernorm"):
    assert f"model.layers.0.{n}.weight" in a and f"model.layers.{m.num_layers}.{n}.weight" in a
  ours, back = import_dir(tmp_path / "a")
  assert ours.model.sandwich_norm and ours.model.mtp_depth == 1
  for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
    np.testing.assert_array_equal(np.asarray(x), y)
  hf.write_hf_dir(back, ours.model, str(tmp_path / "b"))
  b = _all_tensors(tmp_path / "b")
  assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- bad directories: one line


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory):
  from pangu_jax.tokenizer import train_bpe
  from pangu_jax.train.sources import embedded_documents

  d = tmp_path_factory.mktemp("good")
  random_hf_model(hf_config()).save_pretrained(d, max_shard_size="40KB")
  train_bpe(embedded_documents()[:10], 290).save(str(d / "tokenizer.json"))  # the checkpoint's own tokenizer
  return d


def _copy(src, dst):
  import shutil

  shutil.copytree(src, dst)
  return dst


def _edit_config(d, **kw):
  conf = json.loads((d / "config.json").read_text())
  conf.update(kw)
  (d / "config.json").write_text(json.dumps(conf))


def _bad_cases(good, tmp):
  def missing_config():
    d = _copy(good, tmp / "a")
    (d / "config.json").unlink()
    return d, "has no config.json"

  def model_type():
    d = _copy(good, tmp / "b")
    _edit_config(d, model_type="llama")
    return d, "model_type 'llama' is not supported"

  def cannot_honour():
    d = _copy(good, tmp / "c")
    _edit_config(d, hidden_act="gelu")
    return d, "hidden_act=\"gelu\" cannot be honoured"

  def shape():
    d = _copy(good, tmp / "d")
    _edit_config(d, intermediate_size=40)
    return d, "mlp."  # the first dense-layer projection read, e.g. "... down_proj.weight has shape (32, 48);
    # config.json implies (32, 40)"

  def truncated():
    d = _copy(good, tmp / "e")
    shard = sorted(p for p in d.iterdir() if p.name.endswith(".safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    return d, shard.name

  def index_names_missing():
    d = _copy(good, tmp / "f")
    shard = sorted(p for p in d.iterdir() if p.name.endswith(".safetensors"))[-1]
    shard.unlink()
    return d, f"names {shard.name}, which is not in"

  return [missing_config, model_type, cannot_honour, shape, truncated, index_names_missing]


def test_bad_directories_get_one_line(good_dir, tmp_path):
  for case in _bad_cases(good_dir, tmp_path):
    d, want = case()
    with pytest.raises(hf.HFCheckpointError) as e:
      import_dir(d)
    msg = str(e.value)
    assert want in msg and "\n" not in msg, (case.__name__, msg)
    if case.__name__ == "shape":
      assert "has shape" in msg and "config.json implies" in msg and "40" in msg


def test_convert_binary_writes_a_workdir_the_readers_accept(good_dir, tmp_path):
  """The binary on a good directory, then generate and export read the workdir; a bad one is one line, exit 2."""
  wd = tmp_path / "wd"
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.convert", f"--hf_dir={good_dir}", f"--workdir={wd}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["layout"] == "deepseek_v3" and (wd / "config.py").exists()
  conf = json.loads((wd / "config.json").read_text())
  assert "tokenizer.json" in summary["tokenizer_files"] and conf["data"]["tokenizer"] == "bpe"
  assert conf["data"]["tokenizer_path"] == str(wd / "tokenizer" / "tokenizer.json")
  gen = subprocess.run([sys.executable, "-m", "pangu_jax.generate", f"--workdir={wd}", "--max_tokens=4", "--json",
                        "--nowarmup"], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert gen.returncode == 0, gen.stderr
  out = json.loads(gen.stdout.strip().splitlines()[-1])
  from pangu_jax.tokenizer import load_tokenizer

  tok = load_tokenizer(str(good_dir / "tokenizer.json"))  # decoded by the checkpoint's tokenizer, not bytes
  assert out["tokenizer"] == "bpe" and out["text"] == tok.decode(out["tokens"])
  assert tok.decode(tok.encode("The ")) == "The "
  again = subprocess.run([sys.executable, "-m", "pangu_jax.convert", f"--hf_dir={good_dir}", f"--workdir={wd}"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "already holds checkpoints" in again.stderr
  assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1, again.stderr
  bad = tmp_path / "bad"
  bad.mkdir()
  proc = subprocess.run([sys.executable, "-m", "pangu_jax.convert", f"--hf_dir={bad}", f"--workdir={tmp_path / 'x'}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2 and "has no config.json" in proc.stderr, proc.stderr
  assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_imported_workdir_fine_tunes_exports_and_passes_parity(tmp_path):
  """convert -> train resumes from step 0 and moves the weights -> export writes a Hugging Face directory of the
  fine-tuned weights that transformers loads and agrees with -> parity passes on the workdir."""
  cfg = hf_config(n_group=2, topk_group=1, rope_parameters=YARN, num_nextn_predict_layers=1)
  src = tmp_path / "src"
  random_hf_model(cfg, seed=7).save_pretrained(src)
  (src / "tokenizer_config.json").write_text("{}")
  wd = tmp_path / "wd"
  summary = convert(str(src), str(wd))
  assert summary["tokenizer_files"] == ["tokenizer_config.json", "generation_config.json"]
  assert summary["mtp_depth"] == 0  # declared, but transformers saves no MTP layers: imported without
  assert (wd / "tokenizer" / "tokenizer_config.json").exists()
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                                     timeout=600)
  train = run("pangu_jax.train", f"--config={wd / 'config.py'}", f"--workdir={wd}", "--config.train.steps=2",
              "--config.train.batch_size=4", "--config.train.seq_len=16", "--config.train.ep_group_size=4",
              "--config.train.checkpoint_every=2", "--config.train.eval_every=2", "--config.train.eval_batches=1",
              "--noprogress")
  assert train.returncode == 0, train.stderr[-3000:]
  assert "resuming from step 0" in train.stderr
  out = tmp_path / "export"
  exp = run("npu_backend.export", f"--workdir={wd}", f"--out={out}", "--seq_len=8", "--json", "--hf_shard_gb=0.00005")
  assert exp.returncode == 0, exp.stderr[-3000:]
  meta = json.loads(exp.stdout.strip().splitlines()[-1])["hf"]
  assert meta["layout"] == "deepseek_v3" and meta["shards"] > 1 and (out / "hf" / hf.INDEX).exists()
  assert (out / "hf" / "tokenizer_config.json").exists()
  tuned, params = import_dir(out / "hf")
  original = _all_tensors(src)
  exported = _all_tensors(out / "hf")
  assert any(not torch.equal(original[k], exported[k]) for k in original)  # fine-tuning moved the weights
  model = AutoModelForCausalLM.from_pretrained(out / "hf", dtype=torch.float32, attn_implementation="eager").eval()
  tokens = tokens_for(cfg, seed=9)
  assert rel_l2(jax_logits_and_experts(params, tuned.model, tokens)[0], hf_logits_and_experts(model, tokens)[0]) <= 1e-5
  par = run("npu_backend.parity", f"--workdir={wd}", "--batch=2", "--seq_len=8", "--json")
  assert par.returncode == 0, par.stdout[-2000:] + par.stderr[-2000:]
  # the torch-side generator on the export of this imported, fine-tuned workdir: JAX's greedy tokens (fp32) from the
  # same fine-tuned weights (read back from the export's Hugging Face directory above), byte-tokenised prompt
  from pangu_jax.model.decode import generate  # noqa: PLC0415

  prompt = list(b"The cat")
  want = np.asarray(generate(params, np.asarray([prompt], np.int32), tuned.model, 6))[0, len(prompt):].tolist()
  torch_gen = run("npu_backend.generate", f"--export={out}", "--prompt=The cat", "--max_tokens=6", "--json")
  assert torch_gen.returncode == 0, torch_gen.stderr[-2000:]
  got = json.loads(torch_gen.stdout.strip().splitlines()[-1])
  assert got["tokens"] == want and got["tokenizer"] == "byte" and not got["jax_imported"]


def test_gqa_model_is_one_line_both_ways_and_exports_llama_names(tmp_path):
  """DeepSeek-V3 / openPangu directories have MLA attention: a GQA model is refused in one line before any work
  (export: before the graph is traced or the directory made; import: before a tensor is read). The exporter's
  torch-layout state_dict names GQA weights as Llama does (q/k/v/o_proj, rotate-half layout)."""
  from npu_backend.export.model import export_to_dir  # noqa: PLC0415
  from npu_backend.weights import to_torch_layout  # noqa: PLC0415
  from pangu_jax.params import abstract_params  # noqa: PLC0415

  cfg = base_config()
  cfg.model = our_model_cfg(attention="gqa", num_kv_heads=1, head_dim=8)
  want = r"^config\.model\.attention='gqa' cannot be .* \(the deepseek_v3 and pangu_ultra_moe layouts have MLA"
  for sandwich in (False, True):
    cfg.model.sandwich_norm = sandwich
    with pytest.raises(hf.HFCheckpointError, match=want):
      hf.hf_config(cfg.model)
  rng = np.random.default_rng(0)  # random arrays of the model's shapes (an init would cost seconds of eager ops)
  params = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(np.float32), abstract_params(cfg.model))
  with pytest.raises(hf.HFCheckpointError, match=want):
    export_to_dir(cfg, params, str(tmp_path / "out"), 1, 4)
  assert not (tmp_path / "out").exists()
  with pytest.raises(hf.HFCheckpointError, match=want):
    hf.import_params(None, cfg.model, None)
  names = to_torch_layout(params, cfg.model)
  d = cfg.model.hidden_size
  assert names["model.layers.1.self_attn.k_proj.weight"].shape == (8, d)
  assert names["model.layers.1.self_attn.q_proj.weight"].shape == (2 * 8, d)
  o = params["dense_layers"]["attn"]["o"][0]
  np.testing.assert_array_equal(names["model.layers.0.self_attn.o_proj.weight"], o.T)
  with pytest.raises(hf.HFCheckpointError, match="GQA"):
    to_torch_layout(params, cfg.model, rope_interleave=True)
