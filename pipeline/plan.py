"""Cost forecast of a study: every job, its GPU-hours and peak memory, and the wall time on N GPUs.

    python -m pipeline.plan --configfile config/cifar10_ucf101.yaml --gpu h100 [--jobs]

Torch-free (it runs on a laptop before anything is installed but the workflow's Python deps).

Model. Every GPU stage is counted in backbone *passes*: one forward of one sample (`fwd`) and
one backward of one sample (`bwd`, weights or input gradient alike), summed over the job
exactly as the stage's code loops (pretraining epochs x steps x views x inner-attack steps,
kNN monitors, fine-tuning attacks and held-out monitors, every evaluation attack, corruption
and sanity check). tests/test_plan.py runs the real stage code on a small model with a
counting wrapper round the backbone and checks these counts sample for sample. A job's time is

    seconds = (fwd + 2 bwd) / 3 / rate(backbone, precision) + overhead

where `rate` is the measured forward+backward throughput (a backward costs about two forwards)
and AutoAttack is timed from its own measured anchor (below). The projection and linear heads,
augmentations, k-means and the loss itself are not counted (each well under 5% of a backbone
pass at these sizes). Evaluation cascades (an attack runs only on samples still robust) and
AutoAttack's cost depend on the accuracies the study will find: the forecast takes the
assumed accuracies of `ACCURACY` and counts chained attacks on every clean-correct sample
(an upper bound: robust <= clean). Wall time on N GPUs is a list-scheduling simulation of the
DAG (longest remaining path first), next to its two lower bounds: the critical path and
total / N.
"""

from __future__ import annotations

import argparse
import copy
import heapq
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.grid import RESULTS, Grid, expand_mechanism

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

# ---- measured anchors ---------------------------------------------------------------------------
# H100 (SXM, 80 GB), one run each, 2026-11-22 (issue #17; design.md "Speed design").
ANCHORS_H100 = {
    "resnet18_simclr_epoch_s": (1.47, "ResNet-18 SimCLR, 32x32, bf16, network alone: s per 50k-image epoch (2 views)"),
    "r3d_18_bf16_clips_s": (871.0, "r3d_18 fwd+bwd, 16x112^2, bf16: clips/s"),
    "r2plus1d_18_bf16_clips_s": (452.0, "r2plus1d_18 fwd+bwd, 16x112^2, bf16: clips/s"),
    "resnet18_pgd10_bf16_img_s": (6073.0, "PGD-10 on ResNet-18, bf16, channels_last: images/s"),
    "resnet18_autoattack_1000_s": (231.0, "standard AutoAttack (pyautoattack), ResNet-18, 1,000 robust images: s"),
    "r3d_18_pgd10_fp32_clips_s": (62.0, "PGD-10 on r3d_18 clips, fp32: clips/s"),
}
ANCHOR_SOURCE = "H100, one run each, 2026-11-22 (issue #17 anchors)"

# fp32 / bf16 forward+backward throughput, from the one backbone measured both ways:
# r3d_18 PGD-10 fp32 = 10 passes x 62 clips/s = 620 passes/s vs 871 bf16 [derived, applied to all].
FP32_FACTOR = 10 * ANCHORS_H100["r3d_18_pgd10_fp32_clips_s"][0] / ANCHORS_H100["r3d_18_bf16_clips_s"][0]

# Forward+backward samples per second at the reference input size (bf16 measured, fp32 derived).
_H100_BF16 = {
    "resnet18": 2 * 50_000 / ANCHORS_H100["resnet18_simclr_epoch_s"][0],  # 68,027/s; PGD-10 anchor: 60,730/s (-11%)
    "r3d_18": ANCHORS_H100["r3d_18_bf16_clips_s"][0],
    "r2plus1d_18": ANCHORS_H100["r2plus1d_18_bf16_clips_s"][0],
}
REFERENCE_INPUT = {"resnet18": (1, 32), "r3d_18": (16, 112), "r2plus1d_18": (16, 112)}  # (frames, side) of the anchors

# CPU (the embedded studies): forward+backward samples/s of ONE thread (every job runs with
# `threads: 1`), fp32, at the input sizes (frames, side) given; (backbone, width) -> (rate, input).
# benchmarks/cpu_anchors.py, fastest of 5 rounds (benchmarks/RESULTS.md).
CPU_ANCHORS = {("resnet_small", 8): (2961.4, (1, 16)), ("r3d_small", 8): (351.3, (8, 16)),
               ("resnet_small", 4): (4431.0, (1, 16)), ("r3d_small", 4): (494.9, (8, 16))}
CPU_SOURCE = "2-core Intel Xeon VM, one thread per job, 2026-12-04 (benchmarks/cpu_anchors.py)"
# A CPU job's wall seconds = CPU_PASS_FACTOR[stage] x (its backbone passes / the anchor) + CPU_JOB_SECONDS[stage]:
# least squares per stage over every job's benchmark file of two measured runs on that machine, 2 jobs at a
# time (the default study, 14 min 38 s, and the mechanism study, 13 min 35 s). Factors well under 1 say what
# the fit found: at these tiny sizes a job is not bound by backbone passes (data, augmentation, heads, k-means,
# Python per batch, two jobs sharing the memory bus). Forecast wall: +7 % and -10 % of the two runs.
CPU_PASS_FACTOR = {"pretrain": 0.21, "mine": 1.0, "finetune": 0.22, "match": 0.05, "evaluate": 0.27, "analyse": 0.39}
CPU_JOB_SECONDS = {"embed": 2.2, "decode": 1.4, "pretrain": 13.6, "mine": 8.5, "finetune": 0.4, "match": 9.2, "evaluate": 7.0,
                   "analyse": 14.5, "report": 5.6}

# Per GPU: factor on the H100 figures, and whether it is measured ("cpu": CPU_ANCHORS, one job per core).
GPUS = {
    "h100": {"factor": 1.0, "memory_gb": 80, "note": "measured anchors (H100 SXM)"},
    # H200: the H100's compute with 141 GB HBM3e at 4.8 TB/s (vs 3.35): 1.1x is ASSUMED, not measured,
    # until benchmarks/gpu_check.sh runs on one (its figures replace this entry).
    "h200": {"factor": 1.1, "memory_gb": 141, "note": "ASSUMED: H100 figures x 1.1 (memory bandwidth), not measured"},
    "cpu": {"factor": None, "memory_gb": None, "note": f"CPU anchors: {CPU_SOURCE}"},
}

# AutoAttack (standard): per clean-correct sample APGD-CE's 100 iterations; per sample still robust
# after it, APGD-T and FAB-T (9 targets x 100 iterations each, fwd+bwd) and Square (5,000 queries,
# forward only). pyautoattack runs them at far below the PGD loop's throughput (small batches,
# per-iteration bookkeeping): its efficiency is calibrated on the measured anchor, reading
# "1,000 robust images" as 1,000 clean-correct images that stay robust through all four attacks.
AA_CE_PASSES = 100
AA_ROBUST_PASSES = 9 * 100 + 9 * 100 + 5000 / 3  # fwd+bwd equivalents (Square: forward only = 1/3)


AA_PER_ROBUST_SAMPLE = 1 / 3 + AA_CE_PASSES + AA_ROBUST_PASSES  # its clean forward, APGD-CE, the other three


def _aa_efficiency() -> float:
    fp32 = _H100_BF16["resnet18"] * FP32_FACTOR
    return 1000 * AA_PER_ROBUST_SAMPLE / (ANCHORS_H100["resnet18_autoattack_1000_s"][0] * fp32)


AA_EFFICIENCY = _aa_efficiency()

# Assumed accuracies (fractions of the evaluated test samples) that set the evaluation's cascade
# and AutoAttack cost. Images: RobustSSL's CIFAR-10 AutoAttack table at 8/255 (methods.md 4.3: ACL
# SLF 39.2 / ALF 40.6 / AFF 49.6, clean ~0.8); a non-adversarial encoder under SLF/ALF is taken as
# broken (0.0). Video: ASSUMED the same robust fractions at a lower clean accuracy (no published
# adversarial numbers for UCF101/HMDB51 clips).
ACCURACY = {
    "clean": {"image": 0.80, "video": 0.60},
    "robust": {("slf", True): 0.40, ("alf", True): 0.41, ("aff", True): 0.50,
               ("slf", False): 0.0, ("alf", False): 0.0, ("aff", False): 0.50},
}
ADVERSARIAL_CSL = {"rocl", "acl"}  # robust encoders (CLAE's small FGSM view is not adversarial training)

JOB_OVERHEAD_S = 30.0  # per GPU job: interpreter + torch import, CUDA init, data to the device [assumed]

# Backbone parameter counts and the bytes a forward saves for backward, per sample in fp32, measured
# on CPU with torch.autograd.graph.saved_tensors_hooks at the reference input (2026-12-01; an upper
# bound: a tensor saved by two ops counts twice). bf16 halves the activations.
PARAMS = {"resnet18": 11_168_832, "r3d_18": 33_166_272, "r2plus1d_18": 31_300_125}
SAVED_MB_FP32 = {"resnet18": 28.34, "r3d_18": 317.47, "r2plus1d_18": 789.82}
CUDA_CONTEXT_GB = 1.0  # context, cuDNN workspace, allocator slack [assumed]
FEATURES_GB = 2.0  # forward-only stages: one batch's activations and the (N, 512) features [assumed]

# Official split sizes (train, test, classes) per source and fold, one clip per video.
DATASET_SIZES = {
    ("cifar10", 1): (50_000, 10_000, 10), ("cifar100", 1): (50_000, 10_000, 100),
    # ucfTrainTestlist/trainlist0N.txt / testlist0N.txt line counts
    ("ucf101", 1): (9_537, 3_783, 101), ("ucf101", 2): (9_586, 3_734, 101), ("ucf101", 3): (9_624, 3_696, 101),
    # testTrainMulti_7030_splits: 70 train / 30 test videos per class in every fold
    ("hmdb51", 1): (3_570, 1_530, 51), ("hmdb51", 2): (3_570, 1_530, 51), ("hmdb51", 3): (3_570, 1_530, 51),
}
VIDEO_SOURCES = {"ucf101", "hmdb51", "video_folder"}
# pipeline.corruptions.VIDEO_CORRUPTIONS (checked in tests/test_plan.py): clips only.
VIDEO_ONLY_CORRUPTIONS = {"frame_drop", "frame_repeat", "temporal_shuffle", "h264"}
# pipeline.attacks.NORM's L2 attacks (checked in tests/test_plan.py).
L2_ATTACKS = {"pgd_l2", "cw_l2"}


# ---- passes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passes:
    """Backbone samples forwarded and backpropagated (fp32/bf16 alike)."""

    fwd: float = 0
    bwd: float = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.fwd + other.fwd, self.bwd + other.bwd)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.fwd * k, self.bwd * k)

    __rmul__ = __mul__

    @property
    def equivalents(self) -> float:
        """Forward+backward equivalents: a forward alone is a third of one."""
        return (self.fwd + 2 * self.bwd) / 3


def grad_passes(n: float) -> Passes:
    """n samples forwarded with gradients and backpropagated."""
    return Passes(n, n)


def forward_passes(n: float) -> Passes:
    return Passes(n, 0)


def pretrain_step_passes(loss: str, batch: int, attack_steps: int = 0) -> Passes:
    """One pretraining step of `pipeline.pretrain` on a batch of B samples.

    ce: one view. supcon / nt_xent / focal_infonce: two views in one pass. clae: two views,
    a no-grad anchor of view 1, s attack steps on view 1, the adversarial view. rocl: a
    no-grad target of view 2, s steps on view 1, then three views. acl: two views, s steps on
    both views, the two adversarial views.
    """
    b, s = batch, attack_steps
    if loss == "ce":
        return grad_passes(b)
    if loss in ("supcon", "nt_xent", "focal_infonce"):
        return grad_passes(2 * b)
    if loss == "clae":
        return grad_passes(2 * b) + forward_passes(b) + grad_passes(s * b) + grad_passes(b)
    if loss == "rocl":
        return forward_passes(b) + grad_passes(s * b) + grad_passes(3 * b)
    if loss == "acl":
        return grad_passes(2 * b) + grad_passes(2 * s * b) + grad_passes(2 * b)
    raise ValueError(f"pretrain.methods.*.loss: no pass model for {loss!r}")


def knn_monitors(epochs: int, knn_every: int) -> int:
    """Times the kNN monitor embeds train and test: every `knn_every` epochs, and once at the end."""
    return (epochs // knn_every if knn_every else 0) + 1


def pretrain_job_passes(model: dict, method: dict, n_train: int, n_test: int) -> Passes:
    """A whole pretraining job: epochs x (n_train // batch) steps (drop_last) + the kNN monitors."""
    steps_per_epoch = n_train // model["batch_size"]
    attack_steps = method["attack"]["steps"] if method["loss"] in ("clae", "rocl", "acl") else 0
    train = pretrain_step_passes(method["loss"], model["batch_size"], attack_steps) * (model["epochs"] * steps_per_epoch)
    return train + forward_passes(n_train + n_test) * knn_monitors(model["epochs"], model["knn_every"])


def mine_views(mine: dict) -> int:
    """Augmented support views the mine stage embeds (FNC, or every algorithm when `compare`)."""
    selecting = bool(mine.get("select_k")) and mine["algorithm"] in ("knn", "fnc")  # the label-free choice of k needs views
    return mine["support_views"] if mine["algorithm"] == "fnc" or mine["compare"] or selecting else 0


def mine_job_passes(n_train: int, views: int = 0, windows: int = 1) -> Passes:
    """The warm-up encoder embeds the training split once per clip window, then once per support view."""
    return forward_passes(n_train * (windows + views))


def match_job_passes(snapshots: int, n_train: int, n_test: int) -> Passes:
    """Per supervised snapshot: features of the train and test splits once (the SLF head trains on them)."""
    return forward_passes(n_train + n_test) * snapshots


def analyse_job_passes(max_samples: int, n_train: int, n_test: int, encoders: int, sensitivity_samples: int = 0,
                       sensitivity_steps: int = 0) -> Passes:
    """Per encoder: the train and test subsets, two augmented views of the test subset, and the feature
    displacement of the first `sensitivity_samples` of it (clean, random corner, PGD steps, result)."""
    train, test = min(max_samples, n_train), min(max_samples, n_test)
    s = min(sensitivity_samples, test)
    return (forward_passes(train + 3 * test + 3 * s) + grad_passes(s * sensitivity_steps)) * encoders


def holdout_split(n_train: int, holdout: int) -> tuple[int, int]:
    """(trained, held-out) sample counts of `pipeline.adversarial.loop.split_holdout`."""
    held = min(holdout, n_train // 4)
    return n_train - held, held


def adversarial_step_passes(training: str, batch: int, steps: int, full: bool) -> Passes:
    """One ALF (full=False: frozen encoder, no encoder backward) or AFF (full=True) step.

    pgd_at / fgsm_rs: s attack steps, then the adversarial batch. trades: a no-grad clean
    forward, s attack steps, then clean and adversarial batches.
    """
    trained = lambda n: grad_passes(n) if full else forward_passes(n)  # noqa: E731
    if training in ("pgd_at", "fgsm_rs"):
        s = 1 if training == "fgsm_rs" else steps
        return grad_passes(s * batch) + trained(batch)
    if training == "trades":
        return forward_passes(batch) + grad_passes(steps * batch) + trained(2 * batch)
    raise ValueError(f"finetune.protocols.*.training: no pass model for {training!r} (pgd_at, fgsm_rs, trades)")


def finetune_job_passes(protocol: str, section: dict, n_train: int, n_test: int) -> Passes:
    """A whole `pipeline.finetune` job of protocol slf, alf[_x] or aff[_x].

    slf: features of the train and test splits once (the head trains on them). alf/aff: epochs x
    steps, a held-out clean + PGD-`monitor_steps` check per epoch, then train and test accuracy.
    """
    kind = protocol.split("_")[0]
    if kind == "slf":
        return forward_passes(n_train + n_test)
    adv = section["protocols"][protocol]
    trained, held = holdout_split(n_train, adv["holdout"])
    batch = min(adv["batch_size"], trained)
    steps = adv["epochs"] * max(0, trained // batch)
    training = adversarial_step_passes(adv["training"], batch, adv["steps"], full=kind == "aff") * steps
    monitor = (forward_passes(held) + grad_passes(adv["monitor_steps"] * held) + forward_passes(held)) * adv["epochs"]
    return training + monitor + forward_passes(n_train + n_test)


def attack_passes(name: str, settings: dict, n: int) -> Passes:
    """One attack on n samples, plus the prediction on its output. fgsm and pgd are exact;
    the pyautoattack components (apgd_*, fab_t, square) are their iteration budgets."""
    if name == "fgsm":
        return grad_passes(n) + forward_passes(n)
    if name in ("pgd", "pgd_l2"):
        restarts = settings.get("restarts", 1)
        extra = forward_passes(n * restarts) if restarts > 1 else Passes()
        return grad_passes(settings.get("steps", 10) * restarts * n) + extra + forward_passes(n)
    if name == "cw_l2":
        return grad_passes(settings.get("steps", 50) * n) + forward_passes(n)
    if name == "apgd_ce":
        return grad_passes(settings.get("steps", 100) * settings.get("restarts", 1) * n) + forward_passes(n)
    if name in ("apgd_t", "fab_t"):
        per = settings.get("steps", 100) * settings.get("restarts", 1) * settings.get("n_target_classes", 9)
        return grad_passes(per * n) + forward_passes(n)
    if name == "square":
        return forward_passes(settings.get("queries", 5000) * settings.get("restarts", 1) * n + n)
    raise ValueError(f"evaluate.attacks: no pass model for {name!r}")


@dataclass(frozen=True)
class EvalCost:
    passes: Passes  # fp32 (or evaluate.precision) passes of the attacks, checks and corruptions
    autoattack_clean: float  # clean-correct samples AutoAttack attacks (APGD-CE on each)
    autoattack_robust: float  # samples still robust after APGD-CE (the other three attacks on each)


def epsilons_of(name: str, settings: dict, section: dict) -> list[float]:
    """The eps an attack runs at (its own `epsilons` subset, else all of its norm's)."""
    every = section["epsilons_l2"] if name in L2_ATTACKS else section["epsilons"]
    own = settings.get("epsilons") or []
    return [e for e in every if e in own] if own else list(every)


def evaluate_job_passes(section: dict, n_test: int, is_video: bool, clean: float = 1.0, robust: float = 1.0) -> EvalCost:
    """A whole `pipeline.evaluate` job on the first min(max_samples, n_test) test samples.

    clean / robust: assumed fractions of clean-correct and AutoAttack-robust samples. Chained
    attacks (cascade: true) are counted on every clean-correct sample, an upper bound; with
    cascade: false every attack runs on all of its samples, and the count is exact.
    """
    n = min(section["max_samples"], n_test)
    total = forward_passes(n) + forward_passes(1)  # clean predictions; one sample to read the class count
    aa_clean = aa_robust = 0.0
    for name, settings in section["attacks"].items():
        m = min(n, settings.get("max_samples", n))
        for _ in epsilons_of(name, settings, section):
            if name == "autoattack":
                total += forward_passes(m) + forward_passes(m)  # its own clean check, then our prediction
                aa_clean += clean * m
                aa_robust += robust * m
                continue
            attacked = clean * m if section["cascade"] else m
            total += attack_passes(name, settings, attacked)
    check = section["pgd_steps_check"]
    name = check.get("attack", "pgd")
    if check["factor"] >= 2 and name in section["attacks"] and section["epsilons"]:
        m = min(n, check["max_samples"])
        base = section["attacks"][name].get("steps", 10)
        for steps in (base, base * check["factor"]):  # at each check eps (empty list: the largest only)
            total += attack_passes(name, {**section["attacks"][name], "steps": steps}, m) * max(1, len(check.get("epsilons") or []))
    radius = section["radius"]
    m = min(n, radius["max_samples"])
    if m:  # logit margin and clean check, then 1 + bisection_steps PGD probes, each with its prediction
        total += forward_passes(2 * m) + (grad_passes(m * radius["pgd_steps"]) + forward_passes(m)) * (1 + radius["bisection_steps"])
    spec = section["corruptions"]
    names = [c for c in spec["names"] if is_video or c not in VIDEO_ONLY_CORRUPTIONS]
    total += forward_passes(min(n, spec["max_samples"]) * len(names) * len(spec["severities"]))
    return EvalCost(total, aa_clean, aa_robust)


# ---- the study grid -----------------------------------------------------------------------------
def load_study(path: str | Path) -> dict:
    """The study file with the schema's defaults filled in, as the Snakefile validates it
    (`snakemake.utils.validate(..., set_default=True)`; without Snakemake, e.g. on a bare GPU
    node, the same defaults through jsonschema alone)."""
    config = yaml.safe_load(Path(path).read_text())
    try:
        from snakemake.utils import validate
    except ImportError:
        fill_defaults(config)
    else:
        validate(config, str(SCHEMA), set_default=True)
    expand_mechanism(config)  # the mechanism's levers are methods of their own, as the Snakefile sees them
    return config


def fill_defaults(config: dict, schema: str | Path = SCHEMA, set_default: bool = True) -> None:
    """Validate `config` against the schema in place, inserting every missing key's `default`
    before descending into it (what Snakemake's set_default does); set_default=False only validates."""
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict) and set_default:
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from base(validator, props, instance, schema)

    cls = validators.extend(Draft202012Validator, {"properties": properties})
    cls(yaml.safe_load(Path(schema).read_text())).validate(config)


def method_seeds(config: dict, method: str) -> list[int]:
    return config["pretrain"]["methods"][method]["seeds"] or config["seeds"]


def matched_method(config: dict) -> str | None:
    return Grid.from_config(config).matched_method


def study_jobs(config: dict) -> list[dict]:
    """Every job of the study, from the workflow's own grid (`pipeline.grid`): dicts with `stage`,
    `dataset`, `method`, `seed`, `protocol` (None where a stage has no such wildcard) and `deps`
    (ids of the jobs it needs, as the rules' inputs); the id is `stage:dataset:method:seed:protocol`."""
    grid = Grid.from_config(config)
    jobs: list[dict] = []

    def add(stage, dataset=None, method=None, seed=None, protocol=None, deps=()):
        job = {"stage": stage, "dataset": dataset, "method": method, "seed": seed, "protocol": protocol, "deps": list(deps)}
        job["id"] = ":".join("" if v is None else str(v) for v in (stage, dataset, method, seed, protocol))
        jobs.append(job)
        return job["id"]

    pid = lambda d, m, s: f"pretrain:{d}:{m}:{s}:"  # noqa: E731
    fid = lambda d, m, s, p: f"finetune:{d}:{m}:{s}:{p}"  # noqa: E731
    report_deps = []
    for name in grid.embeds:
        add("embed", name)
    for d in grid.datasets:
        root = config["decode"][d].get("root", "")
        decode = add("decode", d, deps=[f"embed:{n}:::" for n in grid.embeds if root == f"{RESULTS}/embed/{n}"])
        for s in grid.mined_seeds():
            report_deps.append(add("mine", d, seed=s, deps=[pid(d, grid.warmup_method, s)]))
        for m, s in grid.runs():
            deps = [decode] + ([f"mine:{d}::{s}:"] if grid.uses_mined(m) else [])
            report_deps.append(add("pretrain", d, m, s, deps=deps))
        for m, s, p in grid.protocol_runs():
            report_deps.append(add("finetune", d, m, s, p, deps=[pid(d, m, s)]))
        sup, csl = config["report"]["supervised_method"], config["report"]["csl_method"]
        for s in grid.matched_seeds:
            report_deps.append(add("match", d, seed=s, deps=[pid(d, sup, s), fid(d, csl, s, "slf")]))
        for m, s, p in grid.evaluate_runs():
            model = f"match:{d}::{s}:" if m == grid.matched_method else fid(d, m, s, p)
            report_deps.append(add("evaluate", d, m, s, p, deps=[model]))
        report_deps.append(add("analyse", d, deps=[pid(d, m, s) for m, s in grid.runs()]))
    add("report", deps=report_deps)
    return jobs


# ---- costs --------------------------------------------------------------------------------------
@dataclass
class Costed:
    job: dict
    gpu_hours: float
    peak_gb: float
    detail: str
    deps: list[str] = field(default_factory=list)


def digits_per_class() -> list[int]:
    """Images per class of scikit-learn's digits (the embedded image set and the moving digits' sprites)."""
    from sklearn.datasets import load_digits

    labels = load_digits().target
    return [int((labels == c).sum()) for c in range(10)]


def computed_sizes(config: dict, name: str) -> tuple[int, int, int] | None:
    """(train, test, classes) of an embedded dataset, as its decode will split it; None for other sources.

    sklearn_digits: scikit-learn's stratified train_test_split holds out ceil(test_fraction x N).
    An embed entry (pipeline.embed): min(videos_per_class, digits of the class) videos per class, the
    k-th in UCF101 group 1 + 25k // n, and groups 1-7 are fold 1's test split (the only fold it writes).
    """
    section = config["decode"][name]
    if section["source"] == "sklearn_digits":
        n = sum(digits_per_class())
        test = math.ceil(section["test_fraction"] * n)
        return n - test, test, 10
    embedded = config.get("embed", {}).get(section.get("root", "").removeprefix(f"{RESULTS}/embed/"))
    if section["source"] == "ucf101" and embedded is not None:
        videos = [min(embedded["videos_per_class"], have) for have in digits_per_class()]
        test = sum(sum(1 for k in range(n) if 1 + 25 * k // n <= 7) for n in videos)
        return sum(videos) - test, test, 10
    return None


def dataset_info(config: dict, name: str, sizes: dict) -> dict:
    """Sizes, modality, backbone and input of one dataset of the study."""
    section = config["decode"][name]
    source = section["source"]
    computed = computed_sizes(config, name)
    if name in sizes:
        train, test, classes = sizes[name]
    elif computed is not None:
        train, test, classes = computed
    elif (source, section["fold"]) in DATASET_SIZES:
        train, test, classes = DATASET_SIZES[(source, section["fold"])]
    else:
        raise ValueError(f"decode.{name}: no known split sizes for source {source!r}; pass --size {name}=TRAIN,TEST,CLASSES")
    video = source in VIDEO_SOURCES
    clips = section["clips_per_video"] if video else 1
    model = config["pretrain"]["video" if video else "image"]
    backbone = model["backbone"]
    if backbone not in _H100_BF16 and backbone not in {b for b, _ in CPU_ANCHORS}:
        raise ValueError(f"pretrain.{'video' if video else 'image'}.backbone: no throughput anchor for {backbone!r} "
                         f"(have {sorted(_H100_BF16)}); add its measured figure to pipeline/plan.py")
    frames = section["frames"] if video else 1
    sample_bytes = frames * section["size"] ** 2 * 3
    return {"train": train * clips, "test": test * clips, "classes": classes, "video": video, "model": model,
            "backbone": backbone, "frames": frames, "size": section["size"], "data_gb": (train + test) * clips * sample_bytes / 2**30,
            "data_mb_train": train * clips * sample_bytes / 2**20}


def rate(info: dict, precision: str, gpu: str) -> float:
    """Forward+backward samples/s of the dataset's backbone at its input size (pixels scale the anchor)."""
    if gpu == "cpu":
        key = (info["backbone"], info["model"]["width"])
        if key not in CPU_ANCHORS:
            raise ValueError(f"pretrain.{'video' if info['video'] else 'image'}: no CPU anchor for {key[0]} width {key[1]} "
                             f"(have {sorted(CPU_ANCHORS)}); run benchmarks/cpu_anchors.py and add it to pipeline/plan.py")
        cpu_rate, (frames, side) = CPU_ANCHORS[key]
        return cpu_rate * (frames * side**2) / (info["frames"] * info["size"] ** 2)  # fp32 on CPU, whatever `precision`
    if info["backbone"] not in _H100_BF16:
        raise ValueError(f"pretrain.{'video' if info['video'] else 'image'}.backbone: no GPU throughput anchor for "
                         f"{info['backbone']!r} (have {sorted(_H100_BF16)}); the small CPU backbones forecast with --gpu cpu")
    frames, side = REFERENCE_INPUT[info["backbone"]]
    scale = (frames * side**2) / (info["frames"] * info["size"] ** 2)
    bf16 = _H100_BF16[info["backbone"]] * GPUS[gpu]["factor"] * scale
    return bf16 if precision == "bf16" else bf16 * FP32_FACTOR


def training_precision(section: dict) -> str:
    return "fp32" if section.get("precision") == "fp32" else "bf16"  # auto = bf16 on CUDA


def memory_gb(info: dict, graph_samples: float, precision: str, trained: bool, resident_mb: float) -> float:
    """Peak device memory: activations of the samples in one backward graph, weights (+ grads and
    SGD momentum when trained), data kept on the device, and the CUDA context."""
    if info["backbone"] not in SAVED_MB_FP32:  # the small CPU backbones: not measured, not forecast
        return math.nan
    act = SAVED_MB_FP32[info["backbone"]] * (0.5 if precision == "bf16" else 1.0) * graph_samples / 1024
    weights = PARAMS[info["backbone"]] * (12 if trained else 4) / 2**30
    return act + weights + resident_mb / 1024 + CUDA_CONTEXT_GB


def pretrain_graph(loss: str, batch: int) -> int:
    """Samples whose activations are alive at once in a pretraining step."""
    return {"ce": 1, "supcon": 2, "nt_xent": 2, "focal_infonce": 2, "clae": 3, "rocl": 3, "acl": 4}[loss] * batch


def seconds(p: Passes, info: dict, precision: str, gpu: str) -> float:
    return p.equivalents / rate(info, precision, gpu)


def cost_job(job: dict, config: dict, gpu: str, sizes: dict, aa_video_samples: int | None = None) -> Costed:
    """GPU-hours, peak memory and a one-line derivation of one job."""
    stage = job["stage"]
    if stage in ("embed", "decode", "report"):
        fixed = CPU_JOB_SECONDS[stage] if gpu == "cpu" else 0.0
        return Costed(job, fixed / 3600, 0.0, "measured seconds per job" if gpu == "cpu" else "CPU job (not forecast)", job["deps"])
    info = dataset_info(config, job["dataset"], sizes)
    budget = config["pretrain"]["budget_mb"]
    if stage == "pretrain":
        method = config["pretrain"]["methods"][job["method"]]
        prec = training_precision(config["pretrain"])
        p = pretrain_job_passes(info["model"], method, info["train"], info["test"])
        resident = info["data_mb_train"] * (1 + info["test"] / info["train"]) if info["data_mb_train"] <= budget else 0.0
        mem = memory_gb(info, pretrain_graph(method["loss"], info["model"]["batch_size"]), prec, True, resident)
        s = seconds(p, info, prec, gpu)
        detail = f"{info['model']['epochs']} ep x {info['train'] // info['model']['batch_size']} steps, {method['loss']}"
    elif stage in ("mine", "analyse"):
        if stage == "mine":
            mine = config["mine"]
            frames, window = info.get("frames", 1), info["model"]["augment"].get("temporal_crop", 0)
            windows = max(1, frames // window) if info["video"] and mine["temporal_windows"] and window else 1
            p = mine_job_passes(info["train"], mine_views(mine), windows)
        else:
            encoders = sum(len(method_seeds(config, m)) for m in config["pretrain"]["methods"])
            if config["match"]["enabled"]:  # the matched supervised snapshots are described too
                encoders += len(method_seeds(config, config["report"]["supervised_method"]))
            a = config["analyse"]
            p = analyse_job_passes(a["max_samples"], info["train"], info["test"], encoders, a["sensitivity_samples"],
                                   a["sensitivity_steps"])
        s, mem = seconds(p, info, "fp32", gpu), memory_gb(info, 0, "fp32", False, 0) + FEATURES_GB  # both run in fp32
        detail = "forward only"
    elif stage == "match":
        snapshots = config["pretrain"]["methods"][config["report"]["supervised_method"]]["snapshots"]
        p = match_job_passes(snapshots, info["train"], info["test"])
        s, mem, detail = seconds(p, info, "fp32", gpu), memory_gb(info, 0, "fp32", False, 0) + FEATURES_GB, f"{snapshots} snapshots x SLF"
    elif stage == "finetune":
        section = config["finetune"]
        kind = job["protocol"].split("_")[0]
        prec = "fp32" if kind == "slf" else training_precision(section)
        p = finetune_job_passes(job["protocol"], section, info["train"], info["test"])
        s = seconds(p, info, prec, gpu)
        if kind == "slf":
            mem, detail = memory_gb(info, 0, prec, False, 0) + FEATURES_GB, "features once + head"
        else:
            adv = section["protocols"][job["protocol"]]
            graph = adv["batch_size"] * (2 if adv["training"] == "trades" and kind == "aff" else 1)
            mem = memory_gb(info, graph, prec, kind == "aff", 0)
            detail = f"{adv['training']} {adv['epochs']} ep, PGD-{adv['steps']}"
    elif stage == "evaluate":
        section = copy.deepcopy(config["evaluate"])
        if info["video"] and aa_video_samples is not None and "autoattack" in section["attacks"]:
            section["attacks"]["autoattack"]["max_samples"] = aa_video_samples
        method = config["report"]["supervised_method"] if job["method"] == matched_method(config) else job["method"]
        adversarial = config["pretrain"]["methods"][method]["loss"] in ADVERSARIAL_CSL
        kind = job["protocol"].split("_")[0]
        clean = ACCURACY["clean"]["video" if info["video"] else "image"]
        robust = clean * ACCURACY["robust"][(kind, adversarial)] / 0.8 if info["video"] else ACCURACY["robust"][(kind, adversarial)]
        ec = evaluate_job_passes(section, info["test"], info["video"], clean, robust)
        prec = section["precision"]
        s = seconds(ec.passes, info, prec, gpu)
        aa_s = (ec.autoattack_clean * AA_CE_PASSES + ec.autoattack_robust * AA_ROBUST_PASSES) / (rate(info, prec, gpu) * AA_EFFICIENCY)
        s += aa_s
        mem = memory_gb(info, section["batch_size"], prec, False, 0)
        detail = f"attacks+corruptions {seconds(ec.passes, info, prec, gpu) / 3600:.2f} h, AutoAttack {aa_s / 3600:.2f} h"
    else:
        raise ValueError(f"unknown stage {stage!r}")
    if gpu == "cpu":
        return Costed(job, (CPU_PASS_FACTOR[stage] * s + CPU_JOB_SECONDS[stage]) / 3600, mem, detail, job["deps"])
    return Costed(job, (s + JOB_OVERHEAD_S) / 3600, mem, detail, job["deps"])


def critical_path_hours(costed: list[Costed]) -> float:
    """Longest dependency chain, in hours (jobs are listed after their dependencies are known)."""
    return max(longest_remaining(costed).values(), default=0.0)


def longest_remaining(costed: list[Costed]) -> dict[str, float]:
    """Per job: its hours plus the longest chain of jobs that depend on it."""
    children: dict[str, list[str]] = {c.job["id"]: [] for c in costed}
    for c in costed:
        for d in c.deps:
            children[d].append(c.job["id"])
    hours = {c.job["id"]: c.gpu_hours for c in costed}
    memo: dict[str, float] = {}

    def tail(j: str) -> float:
        if j not in memo:
            memo[j] = hours[j] + max((tail(k) for k in children[j]), default=0.0)
        return memo[j]

    sys.setrecursionlimit(max(10_000, 4 * len(costed)))
    return {j: tail(j) for j in hours}


def wall_hours(costed: list[Costed], gpus: int) -> float:
    """List-scheduling makespan on `gpus` GPUs: a ready job (all deps done) starts on a free GPU,
    longest remaining chain first. CPU jobs (0 GPU-hours) take no GPU time."""
    priority = longest_remaining(costed)
    by_id = {c.job["id"]: c for c in costed}
    waiting = {c.job["id"]: len(c.deps) for c in costed}
    children: dict[str, list[str]] = {j: [] for j in by_id}
    for c in costed:
        for d in c.deps:
            children[d].append(c.job["id"])
    ready = [(-priority[j], j) for j, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    now, free = 0.0, gpus
    while ready or running:
        while ready and free:
            _, j = heapq.heappop(ready)
            heapq.heappush(running, (now + by_id[j].gpu_hours, j))
            free -= 1
        now, j = heapq.heappop(running)
        free += 1
        for k in children[j]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, (-priority[k], k))
    return now


def forecast(config: dict, gpu: str, sizes: dict | None = None, aa_video_samples: int | None = None) -> list[Costed]:
    if gpu not in GPUS:
        raise ValueError(f"--gpu {gpu!r}: known GPUs {sorted(GPUS)}")
    return [cost_job(j, config, gpu, sizes or {}, aa_video_samples) for j in study_jobs(config)]


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
    parser = argparse.ArgumentParser(prog="python -m pipeline.plan", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    main()
