"""What `python -m pipeline.plan` prints: totals, wall times and the assumptions."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from pipeline.plan.anchors import (
    AA_CE_PASSES,
    AA_EFFICIENCY,
    AA_ROBUST_PASSES,
    ACCURACY,
    ANCHOR_SOURCE,
    ANCHORS_H100,
    CPU_ANCHORS,
    CPU_JOB_SECONDS,
    CPU_PASS_FACTOR,
    CPU_SOURCE,
    CUDA_CONTEXT_GB,
    FP32_FACTOR,
    GPUS,
    JOB_OVERHEAD_S,
)
from pipeline.plan.costs import Costed, forecast
from pipeline.plan.jobs import load_study
from pipeline.plan.schedule import critical_path_hours, wall_hours


def summary_lines(costed: list[Costed], gpu: str, gpus: Iterable[int] = (1, 8, 64)) -> list[str]:
    """Totals per stage, peak memory and wall times on N GPUs (or, for --gpu cpu, N cores in minutes)."""
    if gpu == "cpu":
        return cpu_summary_lines(costed, gpus)
    total = sum(c.gpu_hours for c in costed)
    lines = [f"total: {len(costed)} jobs, {total:,.1f} GPU-hours on {gpu} ({GPUS[gpu]['note']})"]
    by_stage: dict[str, list[float]] = {}
    for c in costed:
        by_stage.setdefault(c.job["stage"], []).append(c.gpu_hours)
    for stage, hours in by_stage.items():
        lines.append(f"  {stage:9s} {len(hours):4d} jobs {sum(hours):10,.1f} GPU-h   (max {max(hours):.2f} h per job)")
    peak = max(c.peak_gb for c in costed)
    lines.append(f"peak memory of one job: {peak:.1f} GB (GPU has {GPUS[gpu]['memory_gb']} GB)"
                 + ("  WARNING: exceeds the GPU" if peak > GPUS[gpu]["memory_gb"] else ""))
    cp = critical_path_hours(costed)
    for n in gpus:
        lines.append(f"wall time on {n:3d} GPU(s): {wall_hours(costed, n):9,.1f} h   "
                     f"(lower bounds: total/N {total / n:,.1f} h, critical path {cp:,.1f} h)")
    return lines


def cpu_summary_lines(costed: list[Costed], cores: Iterable[int]) -> list[str]:
    """The CPU forecast in minutes: every job takes one core (`threads: 1`), decode and report included."""
    total = 60 * sum(c.gpu_hours for c in costed)
    lines = [f"total: {len(costed)} jobs, {total:,.1f} core-minutes ({GPUS['cpu']['note']})"]
    by_stage: dict[str, list[float]] = {}
    for c in costed:
        by_stage.setdefault(c.job["stage"], []).append(60 * c.gpu_hours)
    for stage, minutes in by_stage.items():
        lines.append(f"  {stage:9s} {len(minutes):4d} jobs {sum(minutes):8,.1f} core-min   (max {max(minutes):.2f} min per job)")
    cp = 60 * critical_path_hours(costed)
    for n in cores:
        lines.append(f"wall time on {n:3d} core(s): {60 * wall_hours(costed, n):7,.1f} min   "
                     f"(lower bounds: total/N {total / n:,.1f} min, critical path {cp:,.1f} min)")
    return lines


def assumption_lines(gpu: str) -> list[str]:
    if gpu == "cpu":
        return [f"anchors: {CPU_SOURCE}"] + [
            f"  {b} width {w}: {r:g} samples/s forward+backward at {f} x {side}^2, fp32, one thread"
            for (b, w), (r, (f, side)) in CPU_ANCHORS.items()] + [
            "a job: CPU_PASS_FACTOR[stage] x its backbone seconds + CPU_JOB_SECONDS[stage] (start-up, data, heads, "
            "augmentation, k-means, writing); embed, decode and report: measured seconds per job",
            f"  factors {CPU_PASS_FACTOR}",
            f"  seconds {CPU_JOB_SECONDS}",
            "fitted on every job of the default and mechanism studies measured on that machine; forecast wall +7 % / -10 % "
            "of the two runs (benchmarks/RESULTS.md). Another CPU: rerun benchmarks/cpu_anchors.py; the factors are this one's",
            "every job takes one core; Snakemake's own scheduling and the report's plots are in the report job's seconds",
        ]
    lines = [f"anchors: {ANCHOR_SOURCE}"]
    lines += [f"  {text}: {value:g}" for value, text in ANCHORS_H100.values()]
    lines += [
        f"fp32/bf16 throughput {FP32_FACTOR:.3f} (r3d_18 PGD-10 fp32 vs bf16 fwd+bwd), applied to every backbone",
        f"GPU factor vs H100: {GPUS[gpu]['factor']} ({GPUS[gpu]['note']})",
        "a backward = 2 forwards; attack (input-gradient) and training backwards cost the same; heads, augmentation, "
        "k-means and losses are not counted",
        f"AutoAttack: {AA_CE_PASSES} passes per clean-correct sample, {AA_ROBUST_PASSES:.0f} per robust one, at "
        f"{AA_EFFICIENCY:.2f} x the fp32 rate (calibrated on the 1,000-image anchor)",
        f"assumed accuracies: clean {ACCURACY['clean']}, AutoAttack-robust (protocol, adversarial CSL encoder) "
        f"{ {f'{k[0]}/{k[1]}': v for k, v in ACCURACY['robust'].items()} } (video: scaled by clean 0.6/0.8)",
        "cascaded attacks counted on every clean-correct sample (upper bound)",
        f"{JOB_OVERHEAD_S:.0f} s start-up per GPU job; decode and report are CPU jobs, not forecast",
        "peak memory: saved activations measured on CPU (fp32, halved for bf16) x samples in one graph, weights "
        f"(x3 when trained), device-resident data, {CUDA_CONTEXT_GB:g} GB context",
        "input sizes other than the anchors' scale the rate by pixels x frames",
    ]
    return lines


def parse_sizes(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, nums = item.partition("=")
        try:
            train, test, classes = (int(v) for v in nums.split(","))
        except ValueError:
            raise SystemExit(f"--size {item!r}: expected NAME=TRAIN,TEST,CLASSES") from None
        out[name] = (train, test, classes)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.plan",
                                     description="Cost forecast of a study: every job, its GPU-hours (or CPU minutes), the wall time.")
    parser.add_argument("--configfile", required=True, help="study file (config/<study>.yaml)")
    parser.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="cpu: the embedded studies on a CPU, one job per core")
    parser.add_argument("--jobs", action="store_true", help="list every job (default: one line per job group)")
    parser.add_argument("--size", action="append", default=[], help="NAME=TRAIN,TEST,CLASSES for a dataset of unknown size")
    parser.add_argument("--video-autoattack-samples", type=int, default=None,
                        help="forecast AutoAttack on only the first N clips of each video test split")
    args = parser.parse_args(argv)
    config = load_study(args.configfile)
    try:
        costed = forecast(config, args.gpu, parse_sizes(args.size), args.video_autoattack_samples)
    except ValueError as error:
        raise SystemExit(f"{args.configfile}: {error}") from None
    print(f"# forecast for {args.configfile} on {args.gpu}")
    unit, scale = ("core-min", 60) if args.gpu == "cpu" else ("GPU-h", 1)
    if args.jobs:
        print(f"{'job':60s} {unit:>8s} {'peak GB':>8s}  derivation")
        for c in costed:
            print(f"{c.job['id']:60s} {scale * c.gpu_hours:8.3f} {c.peak_gb:8.1f}  {c.detail}")
    else:
        groups: dict[tuple, list[Costed]] = {}
        for c in costed:
            j = c.job
            groups.setdefault((j["stage"], j["dataset"], j["method"], j["protocol"]), []).append(c)
        print(f"{'stage:dataset:method:protocol':60s} {'jobs':>4s} {unit + ' each':>11s} {'peak GB':>8s}  derivation")
        for (stage, d, m, p), cs in groups.items():
            name = ":".join(str(v) for v in (stage, d, m, p) if v is not None)
            print(f"{name:60s} {len(cs):4d} {scale * cs[0].gpu_hours:11.3f} {cs[0].peak_gb:8.1f}  {cs[0].detail}")
    print()
    print("\n".join(summary_lines(costed, args.gpu, (1, 2, 4, 16) if args.gpu == "cpu" else (1, 8, 64))))
    print("\nassumptions:")
    print("\n".join(f"- {line}" for line in assumption_lines(args.gpu)))

