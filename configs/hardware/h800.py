"""NVIDIA H800 SXM5 80GB in an 8-GPU HGX node (the export variant of H100 that DeepSeek-V3 trained on), for the
simulator (pangu_jax/sim).

Public figures only: the H800 has H100 SXM's compute and memory with NVLink cut to 400 GB/s (bidirectional);
the DeepSeek-V3 technical report describes its cluster (8 GPUs per node on NVLink/NVSwitch, InfiniBand between
nodes, one 400 Gb/s NIC per GPU) and the bandwidths it achieves (NVLink about 160 GB/s, IB about 50 GB/s).
Efficiency constants: the same generic assumptions as configs/hardware/h100.py. Every number carries its source or
says "assumption".
"""

from pangu_jax.sim.hardware import hardware_config


def get_config():
  return hardware_config(
      name="h800",
      # H100 SXM datasheet figures (the H800 keeps its tensor cores): 989 TFLOPS dense BF16, 494 TFLOPS dense TF32
      matmul_peak={"bfloat16": 989e12, "float32": 494e12},
      fp8_peak=1979e12,  # H100 SXM datasheet: 1,979 TFLOPS dense FP8
      vector_peak={"bfloat16": 134e12, "float32": 67e12},  # datasheet: FP32 67 TFLOPS; bf16 assumption 2x
      gemm_eff_max=0.75,  # assumption (as h100.py)
      gemm_half_dim=96.0,  # assumption (as h100.py)
      attn_eff=0.5,  # assumption (as h100.py)
      memory_gb=80.0,  # datasheet: 80 GB HBM3
      mem_bw=3.35e12,  # datasheet: 3.35 TB/s
      mem_bw_eff=0.8,  # assumption (as h100.py)
      mem_reserved_gb=4.0,  # assumption (as h100.py)
      devices_per_node=8,  # DeepSeek-V3 report: 8 GPUs per node
      intra_bw=200e9,  # H800 NVLink: 400 GB/s bidirectional = 200 GB/s per direction
      intra_latency_s=8e-6,  # assumption (as h100.py)
      inter_bw=50e9,  # DeepSeek-V3 report: InfiniBand 400 Gb/s per GPU (50 GB/s)
      inter_latency_s=15e-6,  # assumption (as h100.py)
      comm_eff=0.8,  # assumption (as h100.py); the report's achieved NVLink 160 GB/s is 0.8 of 200
      offload_bw=51.2e9,  # assumption (as h100.py): PCIe 5.0 x16 at 0.8
      overlap_eff=0.8,  # assumption (as h100.py)
      kernels="fused",  # flash attention, grouped matmul without padding, fused permute (as h100.py)
      op_overhead_s=4e-6,  # assumption (as h100.py)
  )
