"""Pretrain speed (issue 5): lightly's CIFAR-10 SimCLR recipe vs this stage vs the bare network.

In one process, on one device, for SimCLR on 32x32 images at batch 512:

  (a) lightly's own recipe: `ResNetGenerator("resnet-18")`, `SimCLRProjectionHead(512, 512, 128)`,
      `NTXentLoss`, `SimCLRTransform(input_size=32, gaussian_blur=0.0)` (lightly's CIFAR-10
      benchmark settings) in a DataLoader with 8 workers (fewer on CPU), PIL images in;
  (b) this stage's training loop (`pipeline.pretrain.train_epoch`): uint8 data resident on the
      device, batched per-sample augmentation, the stage's torchvision ResNet-18 (CIFAR stem);
  (c) the same network as (b), forward + NT-Xent + backward + SGD step alone, on ready-made
      float batches (no data path, no augmentation);

and prints seconds per epoch of 50,000 images, b/c (the data path's overhead; target <= 1.15
on an H100) and a/b (the speed-up over lightly; target >= 3.5). For clips it times (b) and
(c) for r3d_18 on 16x112x112 clips (target b/c <= 1.25). (a) and (b) run in the device's
training precision (bf16 autocast on CUDA, fp32 on CPU).

On CPU the sizes are reduced (batch 64, 2 timed batches, clips 8x56x56 at batch 2) and the
epoch times are extrapolated from the timed batches; the script says so in its output. (b)
and (c) are timed in alternating rounds and the fastest round of each is kept, so load from
other processes on a shared machine disturbs the ratio as little as possible; (a) keeps its
fastest round of `--batches` consecutive batches from one DataLoader pass.

    python benchmarks/pretrain.py                # CPU: reduced size
    python benchmarks/pretrain.py --device cuda  # full size
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `pipeline`

from pipeline import runtime  # noqa: E402
from pipeline.config import PretrainConfig, from_dict  # noqa: E402
from pipeline.data import Split  # noqa: E402
from pipeline.losses import nt_xent  # noqa: E402
from pipeline.optim import build_optimizer, warmup_cosine  # noqa: E402
from pipeline.pretrain import Projector, StepContext, build_nets, maybe_compile, project, train_epoch  # noqa: E402

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
EPOCH_IMAGES = 50_000  # CIFAR-10's training set
EPOCH_CLIPS = 9_537  # UCF101 split 1's training videos


def stage_config(backbone: str, batch: int, compile_: bool) -> PretrainConfig:
    """A SimCLR pretrain config with the schema's defaults (filled by the workflow's own validator)."""
    from snakemake.utils import validate

    model = {"backbone": backbone, "width": 64, "batch_size": batch, "proj_hidden": 512, "proj_dim": 128,
             "compile": compile_, "small_input": backbone == "resnet18"}
    config = {"pretrain": {"image": model, "methods": {"simclr": {"loss": "nt_xent"}}}}
    validate(config, str(SCHEMA), set_default=True)
    p = config["pretrain"]
    return from_dict(PretrainConfig, {"device": "auto", "precision": "auto", "budget_mb": p["budget_mb"],
                                      "model": p["image"], "method": p["methods"]["simclr"]}, "pretrain")


def synced(rt: runtime.Runtime) -> float:
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)
    return time.perf_counter()


def stage_setup(cfg: PretrainConfig, rt: runtime.Runtime, is_video: bool):
    meta = {"mean": [0.5] * 3, "std": [0.25] * 3, "num_classes": 10}
    nets = runtime.prepare_module(build_nets(cfg, meta, is_video), rt, is_video)
    maybe_compile(nets, cfg.model.compile)
    opt = build_optimizer(list(nets.parameters()), cfg.model.optimizer, cfg.model.lr, cfg.model.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(10_000, 0))
    return StepContext(cfg, nets, Projector(nets), rt, None, torch.Generator(device=rt.device).manual_seed(1)), opt, sched


def resident_split(shape: tuple[int, ...], n: int, rt: runtime.Runtime) -> Split:
    """Random uint8 samples (N, [T,] H, W, C) on the device, as the decode stage's arrays would be."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g).to(rt.device)
    return Split(x=x, y=torch.randint(0, 10, (n,), generator=g).to(rt.device), device=rt.device)


def time_b_and_c(cfg: PretrainConfig, rt: runtime.Runtime, shape: tuple[int, ...], args) -> tuple[float, float]:
    """Seconds per batch of (b) and (c), timed in alternating rounds; the fastest round of each counts
    (on a shared machine the minimum is the least disturbed measurement)."""
    b = StageLoop(cfg, rt, shape, args.batches, args.warm)
    c = NetworkLoop(cfg, rt, shape, args.batches, args.warm)
    times = [(b.time(), c.time()) for _ in range(args.rounds)]
    return min(t[0] for t in times), min(t[1] for t in times)


class StageLoop:
    """(b): the stage's own epoch loop over device-resident uint8 data (warm-up epoch untimed)."""

    def __init__(self, cfg: PretrainConfig, rt: runtime.Runtime, shape: tuple[int, ...], batches: int, warm: int) -> None:
        self.ctx, self.opt, self.sched = stage_setup(cfg, rt, len(shape) == 4)
        bs, self.gen, self.batches = cfg.model.batch_size, torch.Generator().manual_seed(0), batches
        train_epoch(self.ctx, self.opt, self.sched, resident_split(shape, warm * bs, rt), self.gen)
        self.split = resident_split(shape, batches * bs, rt)

    def time(self) -> float:
        return train_epoch(self.ctx, self.opt, self.sched, self.split, self.gen)["seconds"] / self.batches


class NetworkLoop:
    """(c): forward + NT-Xent + backward + SGD step of the same network on ready-made float views."""

    def __init__(self, cfg: PretrainConfig, rt: runtime.Runtime, shape: tuple[int, ...], batches: int, warm: int) -> None:
        self.ctx, self.opt, _ = stage_setup(cfg, rt, len(shape) == 4)
        self.rt, self.batches, self.t = rt, batches, cfg.model.temperature
        chw = (3, *shape[:-1])  # (C,H,W) or (C,T,H,W)
        self.views = rt.to_memory_format(torch.rand(2 * cfg.model.batch_size, *chw, device=rt.device))
        self.run(warm)

    def run(self, steps: int) -> None:
        self.ctx.nets.train()
        for _ in range(steps):
            with self.rt.autocast():
                z1, z2 = project(self.ctx.nets, self.views).chunk(2)
                loss = nt_xent(z1, z2, temperature=self.t)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    def time(self) -> float:
        start = synced(self.rt)
        self.run(self.batches)
        return (synced(self.rt) - start) / self.batches


class PilImages(torch.utils.data.Dataset):
    """uint8 images as PIL, through lightly's transform: what a DataLoader recipe does per sample."""

    def __init__(self, images: np.ndarray, transform) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), 0


def time_lightly(rt: runtime.Runtime, args) -> float | None:
    """(a): seconds per batch of lightly's CIFAR-10 SimCLR recipe, DataLoader included (fastest round)."""
    try:
        from lightly.loss import NTXentLoss
        from lightly.models import ResNetGenerator
        from lightly.models.modules import SimCLRProjectionHead
        from lightly.transforms import SimCLRTransform
    except ImportError:
        print("(a) skipped: lightly is not installed (pip install lightly; it is not a dependency of this package)")
        return None
    resnet = ResNetGenerator("resnet-18")
    backbone = torch.nn.Sequential(*list(resnet.children())[:-1], torch.nn.AdaptiveAvgPool2d(1))
    model = torch.nn.Sequential(backbone, torch.nn.Flatten(1), SimCLRProjectionHead(512, 512, 128)).to(rt.device)
    criterion = NTXentLoss(temperature=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    n_batches = args.warm + args.rounds * args.batches
    images = np.random.default_rng(0).integers(0, 256, (n_batches * args.batch, 32, 32, 3), dtype=np.uint8)
    loader = torch.utils.data.DataLoader(
        PilImages(images, SimCLRTransform(input_size=32, gaussian_blur=0.0)), batch_size=args.batch, shuffle=True,
        drop_last=True, num_workers=args.workers, pin_memory=rt.is_cuda, persistent_workers=args.workers > 0)
    marks = []
    for i, ((x0, x1), _) in enumerate(loader):
        if i >= args.warm and (i - args.warm) % args.batches == 0:
            marks.append(synced(rt))
        x0, x1 = x0.to(rt.device, non_blocking=True), x1.to(rt.device, non_blocking=True)
        with rt.autocast():
            loss = criterion(model(x0), model(x1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    marks.append(synced(rt))
    return min(b - a for a, b in itertools.pairwise(marks)) / args.batches


def report(name: str, per_batch: float, batch: int, epoch_size: int) -> dict:
    per_epoch = per_batch * (epoch_size // batch)
    print(f"  {name:<44s} {per_batch * 1000:9.1f} ms/batch  {batch / per_batch:9.1f} samples/s  {per_epoch:9.1f} s/epoch")
    return {"ms_per_batch": round(per_batch * 1000, 2), "samples_per_s": round(batch / per_batch, 1), "s_per_epoch": round(per_epoch, 2)}


def images(rt: runtime.Runtime, args) -> dict:
    print(f"SimCLR, 32x32 images, batch {args.batch}, {args.batches} timed batches, epoch = {EPOCH_IMAGES} images")
    cfg = stage_config("resnet18", args.batch, args.compile)
    out = {}
    a = time_lightly(rt, args)
    if a is not None:
        out["a_lightly"] = report(f"(a) lightly recipe, {args.workers} workers", a, args.batch, EPOCH_IMAGES)
    b, c = time_b_and_c(cfg, rt, (32, 32, 3), args)
    out["b_stage"] = report("(b) this stage (resident uint8, batched aug)", b, args.batch, EPOCH_IMAGES)
    out["c_network"] = report("(c) network fwd+bwd+step on ready batches", c, args.batch, EPOCH_IMAGES)
    out["b_over_c"] = round(b / c, 3)
    print(f"  b/c = {b / c:.3f}  (target <= 1.15 on an H100)")
    if a is not None:
        out["a_over_b"] = round(a / b, 3)
        print(f"  a/b = {a / b:.3f}  (target >= 3.5 on an H100)")
    return out


def clips(rt: runtime.Runtime, args) -> dict:
    t, s = args.clip_frames, args.clip_size
    print(f"SimCLR, r3d_18 clips {t}x{s}x{s}, batch {args.clip_batch}, {args.batches} timed batches, "
          f"epoch = {EPOCH_CLIPS} clips")
    cfg = stage_config("r3d_18", args.clip_batch, args.compile)
    b, c = time_b_and_c(cfg, rt, (t, s, s, 3), args)
    out = {"b_stage": report("(b) this stage", b, args.clip_batch, EPOCH_CLIPS),
           "c_network": report("(c) network fwd+bwd+step", c, args.clip_batch, EPOCH_CLIPS), "b_over_c": round(b / c, 3)}
    print(f"  b/c = {b / c:.3f}  (target <= 1.25 on an H100)")
    return out


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--batch", type=int, default=None, help="image batch (default 512; 64 on CPU)")
    parser.add_argument("--batches", type=int, default=None, help="timed batches (default a full epoch on CUDA; 2 on CPU)")
    parser.add_argument("--warm", type=int, default=None, help="untimed warm-up batches (default 3 on CUDA, 1 on CPU)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating timing rounds of (b) and (c), fastest kept (default 1 on CUDA, 5 on CPU)")
    parser.add_argument("--workers", type=int, default=None, help="lightly DataLoader workers (default 8; CPU: cores)")
    parser.add_argument("--clip-frames", type=int, default=None, help="default 16 (8 on CPU)")
    parser.add_argument("--clip-size", type=int, default=None, help="default 112 (56 on CPU)")
    parser.add_argument("--clip-batch", type=int, default=None, help="default 32 (2 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile (b) and (c)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def fill_defaults(args: argparse.Namespace, cuda: bool) -> None:
    """Full size on CUDA; reduced on CPU (a full CPU epoch of ResNet-18 takes about an hour)."""
    full = {"batch": 512, "batches": EPOCH_IMAGES // 512, "warm": 3, "rounds": 1, "workers": 8, "clip_frames": 16, "clip_size": 112,
            "clip_batch": 32}
    reduced = {"batch": 64, "batches": 2, "warm": 1, "rounds": 5, "workers": min(8, os.cpu_count() or 1), "clip_frames": 8,
               "clip_size": 56, "clip_batch": 2}
    for key, value in (full if cuda else reduced).items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    rt = runtime.setup(args.device, "auto", None)
    fill_defaults(args, rt.is_cuda)
    cpu = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    name = rt.describe()["device_name"] if rt.is_cuda else cpu
    print(f"device: {name}; precision {rt.describe()['precision']}; torch {torch.__version__}")
    if not rt.is_cuda:
        print("CPU: reduced size; seconds per epoch are extrapolated from the timed batches")
    out = {"device": name, "args": vars(args) | {"json": str(args.json)}, "images": images(rt, args), "clips": clips(rt, args)}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
