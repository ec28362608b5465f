"""The forecast's measured anchors and assumptions: GPU and CPU throughputs, AutoAttack's calibration,
assumed accuracies, memory, and the official split sizes."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
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
