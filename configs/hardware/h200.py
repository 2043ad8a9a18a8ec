"""NVIDIA H200 SXM 141GB in an 8-GPU HGX node, for the simulator (pangu_jax/sim).

Public figures only (NVIDIA H200 datasheet); same compute and fabric as H100 SXM, larger and faster memory.
Every number carries its source or says "assumption".
"""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      name="h200",
      matmul_peak={"bfloat16": 989e12, "float32": 494e12},  # datasheet: 989 TFLOPS BF16 dense, TF32 494 dense
      fp8_peak=1979e12,  # datasheet: 1,979 TFLOPS dense FP8 tensor core (same SM as H100)
      vector_peak={"bfloat16": 134e12, "float32": 67e12},  # datasheet: FP32 67 TFLOPS; bf16 assumption 2x
      gemm_eff_max=0.75,  # assumption (as h100.py)
      gemm_half_dim=96.0,  # assumption (as h100.py)
      attn_eff=0.5,  # assumption (as h100.py)
      memory_gb=141.0,  # datasheet: 141 GB HBM3e
      mem_bw=4.8e12,  # datasheet: 4.8 TB/s
      mem_bw_eff=0.8,  # assumption
      mem_reserved_gb=4.0,  # assumption
      devices_per_node=8,  # HGX H200: 8 GPUs
      intra_bw=450e9,  # datasheet: NVLink 4 900 GB/s bidirectional
      intra_latency_s=8e-6,  # assumption
      inter_bw=50e9,  # assumption: one 400 Gb/s NDR NIC per GPU, as DGX H100
      inter_latency_s=15e-6,  # assumption
      comm_eff=0.8,  # assumption
      offload_bw=51.2e9,  # PCIe 5.0 x16, assumption 0.8 of 64 GB/s
      # Share of overlappable communication actually hidden under compute when overlap is on: assumption, 0.8
      # (compute slows while sharing memory bandwidth and cores with communication kernels).
      overlap_eff=0.8,
      kernels="fused",  # flash attention, grouped matmul without padding, fused permute (the paper's operators)
      op_overhead_s=4e-6,  # assumption
  )
