"""Stage `embed`: "moving digits" videos, written as real H.264 files in the UCF101 layout.

Each video is one digit from scikit-learn's digits set moving with a constant random
velocity over a black canvas, bouncing off the borders, in a random shade of grey; the label is
the digit. The decode stage reads these files with decord exactly as it reads a user's
UCF101 folder.

    python -m pipeline.embed --cfg '<json of embed.<name>>' --out results/embed/moving_digits
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.config import EmbedConfig, from_json
from pipeline.datasets import ucf101
from pipeline.datasets.digits import load_digits_uint8
from pipeline.datasets.video_io import write_h264
from pipeline.environment import environment
from pipeline.io import write_json
from pipeline.logs import stage_cli

CLASS_NAMES = [f"Digit{d}" for d in range(10)]


def bounce_positions(start: np.ndarray, velocity: np.ndarray, frames: int, span: float) -> np.ndarray:
    """Top-left positions (frames, 2) of a sprite moving at `velocity`, reflected into [0, span]."""
    raw = start[None] + velocity[None] * np.arange(frames)[:, None]
    period = 2 * span
    folded = np.mod(raw, period)
    return np.where(folded > span, period - folded, folded)


def render_clip(digit: np.ndarray, colour: np.ndarray, positions: np.ndarray, cfg: EmbedConfig) -> np.ndarray:
    """uint8 (T, canvas, canvas, 3): the digit (8x8, 0..255) scaled to `sprite` px at each position."""
    src = np.arange(cfg.sprite) * digit.shape[0] // cfg.sprite  # nearest-neighbour resize of the whole digit
    sprite = digit[src][:, src] / 255.0  # (S, S)
    clip = np.zeros((cfg.frames, cfg.canvas, cfg.canvas, 3), dtype=np.float32)
    for t, (y, x) in enumerate(np.round(positions).astype(int)):
        clip[t, y : y + cfg.sprite, x : x + cfg.sprite] = sprite[..., None] * colour
    return np.round(clip * 255).astype(np.uint8)


def make_videos(cfg: EmbedConfig, out: Path) -> dict:
    """Write all videos and split files under `out`; return the manifest."""
    images, labels = load_digits_uint8()
    rng = np.random.default_rng(cfg.seed)
    span = cfg.canvas - cfg.sprite
    entries = []
    for label in range(10):
        chosen = rng.permutation(np.flatnonzero(labels == label))[: cfg.videos_per_class]
        (out / ucf101.VIDEO_DIR / CLASS_NAMES[label]).mkdir(parents=True, exist_ok=True)
        clips_in_group: dict[int, int] = {}
        for k, idx in enumerate(chosen):
            velocity = rng.uniform(0.5, cfg.max_speed, 2) * rng.choice([-1, 1], 2)
            positions = bounce_positions(rng.uniform(0, span, 2), velocity, cfg.frames, span)
            # grey at a random brightness, like the image digits: a random hue would let
            # SimCLR tell clips apart by colour alone, a shortcut with no class information
            colour = np.full(3, rng.uniform(0.6, 1.0))
            group = 1 + k * 25 // len(chosen)  # spread over UCF101's 25 groups; 1-7 are fold 1's test split
            clips_in_group[group] = clips_in_group.get(group, 0) + 1
            stem = f"v_{CLASS_NAMES[label]}_g{group:02d}_c{clips_in_group[group]:02d}"
            clip = render_clip(images[idx], colour, positions, cfg)
            write_h264(out / ucf101.VIDEO_DIR / CLASS_NAMES[label] / f"{stem}.mp4", clip, cfg.fps, cfg.crf)
            entries.append((stem, label, group))
    ucf101.write_layout(out, entries, CLASS_NAMES, "mp4")
    return {"videos": len(entries), "classes": CLASS_NAMES, "config": cfg.__dict__}


def run(cfg: EmbedConfig, out: Path) -> dict:
    """Build the dataset in a temporary folder and rename it into place (atomic)."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    manifest = make_videos(cfg, tmp)
    manifest["seconds"] = round(time.perf_counter() - start, 3)
    write_json(tmp / "manifest.json", {**manifest, "environment": environment()})
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = stage_cli("embed", __doc__, argv, "JSON of one `embed` entry", threads=None)
    parser.add_argument("--out", required=True, type=Path, help="output dataset root")
    args = parser.parse_args(argv)
    manifest = run(from_json(EmbedConfig, args.cfg, "embed"), args.out)
    print(f"embed: wrote {manifest['videos']} videos to {args.out} in {manifest['seconds']} s", file=sys.stderr)

