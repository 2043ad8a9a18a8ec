"""Offscreen rendering of an episode: an image strip and force/depth-against-time plots.

    python -m control_brax.render --peg=l_shape --out=DIR [--seed=0] [--error_scale=1] [--video]
    python -m control_brax.render --workdir=D --out=DIR     (a trained agent in its env; --config=F overrides
                                                            the run's saved config.json)

Runs the scripted controller (or a trained agent, or any policy: `trace_episode(policy=...)`) on the
C engine, which renders through MuJoCo's EGL backend headless (`MUJOCO_GL=egl`,
set by `control_brax/__init__.py` unless already set; `MUJOCO_GL=osmesa` with
Debian's libosmesa6 is the fallback). Writes `episode_strip.png` and
`force_depth.png`, and with `--video` `episode.mp4` (H.264 through the ffmpeg that the `imageio-ffmpeg` package
ships; every control step a frame, played at `--video_fps`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from absl import flags
from ml_collections import config_flags

import confspec


def trace_episode(env, seed: int = 0, policy: Callable | None = None, frames: int = 6, u=None,
                  keep_all_frames: bool = False) -> dict:
  """One episode: per-step time, depth (m), contact force (N), tip pose, and `frames` rendered images (with
  `keep_all_frames`, also every step's image under "all_frames", for save_video)."""
  from control_brax.gym_env import PegInHoleGymEnv  # noqa: PLC0415

  gym_env = PegInHoleGymEnv(env, render_mode="rgb_array")
  opts = {"u": u} if u is not None else None
  obs, _ = gym_env.reset(seed=seed, options=opts)
  rows, images = [], [gym_env.render()]
  while True:
    action = np.zeros(gym_env.action_space.shape) if policy is None else policy(obs)
    obs, reward, terminated, truncated, info = gym_env.step(action)
    rows.append((gym_env.t * gym_env.task_spec.dt, -gym_env.data.qpos[2], info["force"], *gym_env.data.qpos, reward))
    images.append(gym_env.render())
    if terminated or truncated:
      break
  gym_env.close()
  idx = np.linspace(0, len(images) - 1, frames).round().astype(int)
  arr = np.asarray(rows)
  return {"t": arr[:, 0], "depth": arr[:, 1], "force": arr[:, 2], "qpos": arr[:, 3:9], "reward": arr[:, 9],
          "all_frames": images if keep_all_frames else None,
          "frames": [images[i] for i in idx], "frame_t": [float(i * gym_env.task_spec.dt) for i in idx],
          "success": bool(info["success"]), "hole_depth": gym_env.task_spec.hole_depth,
          "success_depth": gym_env.task_spec.success_depth}


def save_strip(trace: dict, path: str) -> str:
  """The episode's frames side by side with their times, as one PNG."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  n = len(trace["frames"])
  fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 2.0))
  for ax, img, t in zip(np.atleast_1d(axes), trace["frames"], trace["frame_t"]):
    ax.imshow(img)
    ax.set_title(f"t = {t:.2f} s", fontsize=8)
    ax.axis("off")
  fig.suptitle("success" if trace["success"] else "not inserted", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def save_video(frames: list, path: str, fps: float = 25.0) -> str:
  """Frames (H x W x 3 uint8, equal sizes) as an H.264 MP4 (yuv420p, so browsers and players open it)."""
  import imageio_ffmpeg  # noqa: PLC0415

  if not frames:
    raise ValueError("save_video: no frames")
  h, w = frames[0].shape[:2]
  writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                       macro_block_size=2, quality=7)  # even sizes (yuv420p)
  writer.send(None)  # start the generator
  try:
    for f in frames:
      writer.send(np.ascontiguousarray(f, dtype=np.uint8))
  finally:
    writer.close()
  return path


def save_force_depth(trace: dict, path: str) -> str:
  """Contact force and insertion depth against time."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, (a1, a2) = plt.subplots(2, 1, figsize=(6, 4), sharex=True)
  a1.plot(trace["t"], trace["force"], color="tab:red")
  a1.set_ylabel("contact force (N)")
  a2.plot(trace["t"], 1000 * trace["depth"], color="tab:blue")
  a2.axhline(1000 * trace["success_depth"], ls="--", color="gray", lw=0.8, label="success depth")
  a2.set_ylabel("tip depth (mm)")
  a2.set_xlabel("time (s)")
  a2.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def agent_policy(cfg, workdir: str, seed_index: int = 0) -> Callable:
  """A numpy obs -> action function of the newest checkpoint of an RL workdir (deterministic actions)."""
  import jax  # noqa: PLC0415

  from control_brax.evaluate import load_agent  # noqa: PLC0415

  runner, ts = load_agent(cfg, workdir)
  params = jax.tree.map(lambda x: x[seed_index], ts.params)
  stats = jax.tree.map(lambda x: x[seed_index], ts.obs_stats)
  act = jax.jit(lambda o: runner.algo.act(params, stats, o))
  return lambda obs: np.asarray(act(np.asarray(obs, np.float32)))


def main(argv):
  del argv
  from control_brax.config import base_env_config  # noqa: PLC0415

  policy = None
  if _WORKDIR.value:
    import json  # noqa: PLC0415

    from control_brax.rl.config import from_saved, validate_rl  # noqa: PLC0415

    if _CONFIG.value is not None:
      cfg = validate_rl(_CONFIG.value)
    else:  # the config the run saved (with every override it was trained with; older workdirs' forms too)
      with open(os.path.join(_WORKDIR.value, "config.json")) as fh:
        cfg = from_saved(json.load(fh))
    env = cfg.env
    policy = agent_policy(cfg, _WORKDIR.value)
  else:
    env = base_env_config()
    env.peg = _PEG.value
  env.error_scale = _ERROR_SCALE.value
  os.makedirs(_OUT.value, exist_ok=True)
  trace = trace_episode(env, seed=_SEED.value, policy=policy, keep_all_frames=_VIDEO.value)
  print(save_strip(trace, os.path.join(_OUT.value, "episode_strip.png")))
  print(save_force_depth(trace, os.path.join(_OUT.value, "force_depth.png")))
  if _VIDEO.value:
    print(save_video(trace["all_frames"], os.path.join(_OUT.value, "episode.mp4"), fps=_VIDEO_FPS.value))


if __name__ == "__main__":
  # Flags exist only when this module runs as a binary (confspec: how a binary is written).
  _PEG = flags.DEFINE_string("peg", "l_shape", "peg file name")
  _OUT = flags.DEFINE_string("out", "runs/render", "output directory")
  _SEED = flags.DEFINE_integer("seed", 0, "episode seed")
  _ERROR_SCALE = flags.DEFINE_float("error_scale", 1.0, "scales the initial-error distribution")
  _VIDEO = flags.DEFINE_bool("video", False, "also write episode.mp4 (every control step a frame)")
  _VIDEO_FPS = flags.DEFINE_float("video_fps", 25.0, "playback frame rate of --video (the control rate is 100 Hz: "
                                  "25 plays at a quarter of real time)", lower_bound=1.0)
  _CONFIG = config_flags.DEFINE_config_file("config", None, "RL config file of a trained agent, overrides as "
                                            "--config.a.b=v (default: the workdir's config.json)")
  _WORKDIR = flags.DEFINE_string("workdir", "", "RL training workdir: render its newest checkpoint instead of the "
                                 "scripted controller")
  confspec.run(main)
