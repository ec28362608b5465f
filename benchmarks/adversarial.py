"""Adversarial fine-tuning speed (issue 7): this stage's PGD-10 training step vs torchattacks.PGD.

In one process, on one device, with one model (the stage's `Classifier`), a PGD-10 adversarial
training step (Madry: x_adv by PGD-10 at eps 8/255, step 2/255, random start, model in eval
mode during the attack; then CE(model(x_adv)) forward + backward + SGD step, train mode):

  (a) this stage: `pipeline.finetune.adversarial.loop.train_step` with the `pgd_at` method, i.e. the
      inner attack of `pipeline.finetune.adversarial.inner.perturb` under `runtime.autocast()` (bf16 on
      CUDA) on channels_last inputs;
  (b) the same loop with the attack made by `torchattacks.PGD(model, eps, alpha, steps=10,
      random_start=True)` called as documented (it runs in float32; it has no autocast option),
      then the same outer step as (a);
  (c) for information: (b) with the torchattacks call inside the same autocast context, to
      separate what bf16 buys from what the leaner loop buys.

It prints images/s for each and the ratio a/b (target on an H100: >= 1.7). Timed in
alternating rounds, the fastest round of each kept (other processes on a shared machine
disturb the ratio as little as possible); on CPU it times process CPU seconds with one
thread, on CUDA wall time with synchronisation.

    python benchmarks/adversarial.py                 # CPU: reduced size (ResNet-18 at 16x16, batch 16)
    python benchmarks/adversarial.py --device cuda   # ResNet-18, 32x32, batch 512
    python benchmarks/adversarial.py --device cuda --modality clip   # r3d_18, 8x112x112, batch 16
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's `pipeline`

from pipeline import runtime  # noqa: E402
from pipeline.config import AdversarialConfig, from_dict  # noqa: E402
from pipeline.finetune.adversarial import TRAINING, AdversarialContext, module_mode  # noqa: E402
from pipeline.finetune.adversarial.inner import to_layout  # noqa: E402
from pipeline.finetune.adversarial.loop import train_step  # noqa: E402
from pipeline.models import Classifier, Encoder  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
SIZES = {  # (backbone, input shape (C, [T,] H, W), batch) per device kind and modality
    ("cuda", "image"): ("resnet18", (3, 32, 32), 512),
    ("cuda", "clip"): ("r3d_18", (3, 8, 112, 112), 16),
    ("cpu", "image"): ("resnet18", (3, 16, 16), 16),
    ("cpu", "clip"): ("r3d_18", (3, 4, 32, 32), 2),
}


def adversarial_cfg() -> AdversarialConfig:
    """A pgd_at entry with the benchmark's attack (the schema's other defaults do not matter here)."""
    sub = {"trades": {"beta": 6.0}, "fgsm_rs": {"step_size": 1.25, "guard": "off", "guard_drop": 0.2},
           "spat": {"scale": 8.0, "margin": 0.2, "n": 0.2, "beta": 6.0},
           "dynamic": {"start": 1.0, "increase": 0.0, "backoff": 1.0, "tolerance": 1.0, "check_every": 1, "adv_weight": 1.0}}
    return from_dict(AdversarialConfig, {"methods": [], "seeds": [], "training": "pgd_at", "epochs": 1, "batch_size": 1,
                                         "optimizer": "sgd", "lr": 0.01, "encoder_lr": 0.01, "weight_decay": 0.0,
                                         "eps": 255 * EPS, "steps": STEPS, "step_size": ALPHA / EPS, "attack_bn": "eval",
                                         "holdout": 1, "monitor_steps": 1, **sub})


def torchattacks_step(model: Classifier, attack, x: torch.Tensor, y: torch.Tensor, rt, opt, inside_autocast: bool) -> torch.Tensor:
    """torchattacks makes x_adv (it switches the model to eval and back itself); the outer step as in (a)."""
    if inside_autocast:
        with rt.autocast():
            x_adv = attack(x, y)
    else:
        x_adv = attack(x, y)
    with module_mode(model, True), rt.autocast():
        loss = F.cross_entropy(model(to_layout(x_adv, rt)).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def elapsed(fn: Callable[[], object], repeats: int, rt) -> float:
    """Seconds for `repeats` calls: wall time with CUDA sync, or this process's CPU time on CPU."""
    clock = time.perf_counter if rt.is_cuda else time.process_time
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)
    start = clock()
    for _ in range(repeats):
        fn()
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)
    return clock() - start


def main(device: str, modality: str, steps: int, rounds: int) -> None:
    rt = runtime.setup(device, "auto", threads=1 if device == "cpu" else None)
    backbone, shape, batch = SIZES[(rt.device.type, modality)]
    torch.manual_seed(0)
    model = Classifier(Encoder(backbone, 64, shape[-1] <= 64, [0.5] * 3, [0.25] * 3), 10)
    model = runtime.prepare_module(model, rt, modality == "clip")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, *shape, device=rt.device), torch.randint(0, 10, (batch,), device=rt.device)
    cfg = adversarial_cfg()
    method = TRAINING["pgd_at"]
    ctx = AdversarialContext(rt, method.attack(cfg), False, (), torch.Generator(device=rt.device).manual_seed(0), cfg)
    import torchattacks

    attack = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
    variants = {
        "(a) this stage": lambda: train_step(model, to_layout(x, rt), y, ctx, method, opt),
        "(b) torchattacks.PGD": lambda: torchattacks_step(model, attack, x, y, rt, opt, inside_autocast=False),
        "(c) torchattacks.PGD in autocast": lambda: torchattacks_step(model, attack, x, y, rt, opt, inside_autocast=True),
    }
    best = {name: float("inf") for name in variants}
    for fn in variants.values():  # warm-up: cudnn autotuning, allocator, lazy imports
        elapsed(fn, 1, rt)
    for _ in range(rounds):
        for name, fn in variants.items():
            best[name] = min(best[name], elapsed(fn, steps, rt))
    report(best, rt, backbone, shape, batch, steps, rounds)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def report(best: dict[str, float], rt, backbone: str, shape: tuple, batch: int, steps: int, rounds: int) -> None:
    where = torch.cuda.get_device_name(rt.device) if rt.is_cuda else f"{cpu_name()}, 1 thread"
    clock = "wall time" if rt.is_cuda else "process CPU time"
    print(f"PGD-{STEPS} adversarial training step, {backbone}, input {tuple(shape)}, batch {batch}, {where}")
    print(f"precision {rt.describe()['precision']}, channels_last {rt.is_cuda}; best of {rounds} rounds of {steps} steps ({clock})")
    rate = {name: steps * batch / sec for name, sec in best.items()}
    for name, r in rate.items():
        print(f"  {name:36s} {r:10.1f} images/s")
    ratio = rate["(a) this stage"] / rate["(b) torchattacks.PGD"]
    print(f"ratio (a)/(b): {ratio:.2f}x   (target on an H100: >= 1.7x)")
    print(f"ratio (a)/(c): {rate['(a) this stage'] / rate['(c) torchattacks.PGD in autocast']:.2f}x   (the loop alone, same precision)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--modality", choices=["image", "clip"], default="image")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per round (default: 1 on CPU, 20 on CUDA)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    main(args.device, args.modality, args.steps or (1 if args.device == "cpu" else 20), args.rounds)
