"""A job's hours and peak memory from its passes and the anchors; the study's forecast."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pipeline.config import EvaluateConfig, from_dict
from pipeline.grid import RESULTS, evaluate_slice
from pipeline.plan.anchors import (
    _H100_BF16,
    AA_CE_PASSES,
    AA_EFFICIENCY,
    AA_ROBUST_PASSES,
    ACCURACY,
    ADVERSARIAL_CSL,
    CPU_ANCHORS,
    CPU_JOB_SECONDS,
    CPU_PASS_FACTOR,
    CUDA_CONTEXT_GB,
    DATASET_SIZES,
    FEATURES_GB,
    FP32_FACTOR,
    GPUS,
    JOB_OVERHEAD_S,
    PARAMS,
    REFERENCE_INPUT,
    SAVED_MB_FP32,
    VIDEO_SOURCES,
)
from pipeline.plan.jobs import matched_method, method_seeds, study_jobs
from pipeline.plan.passes import (
    Passes,
    analyse_job_passes,
    evaluate_job_passes,
    finetune_job_passes,
    match_job_passes,
    mine_job_passes,
    mine_views,
    pretrain_job_passes,
)


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
                         f"(have {sorted(_H100_BF16)}); add its measured figure to pipeline/plan/anchors.py")
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
                             f"(have {sorted(CPU_ANCHORS)}); run benchmarks/cpu_anchors.py and add it to pipeline/plan/anchors.py")
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
        section = evaluate_slice(config, job["dataset"])
        if info["video"] and aa_video_samples is not None and "autoattack" in section["attacks"]:
            section["attacks"]["autoattack"]["max_samples"] = aa_video_samples
        method = config["report"]["supervised_method"] if job["method"] == matched_method(config) else job["method"]
        adversarial = config["pretrain"]["methods"][method]["loss"] in ADVERSARIAL_CSL
        kind = job["protocol"].split("_")[0]
        clean = ACCURACY["clean"]["video" if info["video"] else "image"]
        robust = clean * ACCURACY["robust"][(kind, adversarial)] / 0.8 if info["video"] else ACCURACY["robust"][(kind, adversarial)]
        ec = evaluate_job_passes(from_dict(EvaluateConfig, section, "evaluate"), info["test"], info["video"], clean, robust)
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


def forecast(config: dict, gpu: str, sizes: dict | None = None, aa_video_samples: int | None = None) -> list[Costed]:
    if gpu not in GPUS:
        raise ValueError(f"--gpu {gpu!r}: known GPUs {sorted(GPUS)}")
    return [cost_job(j, config, gpu, sizes or {}, aa_video_samples) for j in study_jobs(config)]
