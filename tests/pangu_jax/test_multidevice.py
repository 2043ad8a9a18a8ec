"""The multi-device harness really gives 8 devices, and a sharded reduction over them is exact."""

import json

from multidevice import run_with_devices


def test_eight_simulated_devices_psum():
  out = run_with_devices("""
      import json, jax, jax.numpy as jnp, numpy as np
      from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
      mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "expert"))
      x = jnp.arange(64.0).reshape(8, 8)
      xs = jax.device_put(x, NamedSharding(mesh, P("data", "expert")))
      total = jax.jit(jnp.sum)(xs)
      print(json.dumps({"n": jax.device_count(), "total": float(total), "shards": len(xs.addressable_shards)}))
  """)
  got = json.loads(out.strip().splitlines()[-1])
  assert got == {"n": 8, "total": float(sum(range(64))), "shards": 8}
