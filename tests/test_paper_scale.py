"""Every model stage of both paper-scale study files at their real model and input sizes, a step each
(decode, pretrain, mine, finetune, evaluate, analyse; report never touches a model and is not run).

ResNet-18 (CIFAR stem) on 32x32 images, R3D-18 (cifar10_ucf101) and R(2+1)D-18 (cifar100_hmdb51) on
16x112x112 clips, on tiny data written here in the official formats: CIFAR python pickles, and
UCF101 / HMDB51 trees of MPEG-4 AVI files at 320x240 (their native size, so decode resizes and
crops) with the official split files. The study's settings are used as loaded (schema defaults
filled), changed only by `shrink`, which touches epochs, steps and sample counts alone (tested
below). Every stage runs through its CLI entry point (`pipeline.<stage>.main`) with the section
the Snakefile would pass (workflow/rules/common.smk), in this process (torch is imported once).

What the GPU run depends on and this proves at real sizes: the uint8-on-device budget decision
(images fit `budget_mb`; one video run with a tiny budget streams), checkpoint and resume (a
pretraining run stopped after its first epoch resumes), AutoAttack on 5-D clips (the video
classifier's test clip is relabelled with its prediction, so that AutoAttack has a clean-correct
sample to attack), mined false negatives (mine -> mined pretraining), dual BatchNorm (ACL) and
the three fine-tuning protocols.

Cost on 2 CPU cores: an R3D-18 forward of one 16x112x112 clip is ~40 GFLOP (R(2+1)D-18 about
twice that), so the video jobs run one training step of 2 clips and evaluate 1 clip; the 13
methods pretrain on the images of the first study (the image model is the same in both; the
second study's images run SimCLR and the mined ACL), SLF/ALF/AFF fine-tune the mined ACL
encoder (dual BN), and the evaluation (one code path for every classifier) runs on its AFF
classifier.

The same file is the CUDA mini study of benchmarks/gpu_check.sh: there `device: auto` picks the
GPU and bf16, and PAPER_SCALE_REPORT=<file> collects every stage's seconds and peak memory.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import analyse, decode, evaluate, finetune, mine, plan, pretrain
from tests.conftest import REPO
from tests.test_decode import coded_frames, write_avi, write_cifar

STUDIES = {
    "cifar10_ucf101": {"image": "cifar10", "video": "ucf101", "image_methods": None},  # None = every method
    "cifar100_hmdb51": {"image": "cifar100", "video": "hmdb51", "image_methods": ["simclr", "acl_mined_elim"]},
}
VIDEO_METHODS = ["simclr"]  # the warm-up of mining; one R3D/R(2+1)D step costs ~10 s on 2 CPU cores
NATIVE_HW = (240, 320)  # UCF101 and HMDB51 frames are 320x240
SOURCE_FRAMES = 32  # a 16-frame clip at stride 2 spans 31 frames

# ---- the override --------------------------------------------------------------------------------
# Keys `shrink` may change, by name: how long (epochs), how many gradient steps or queries, and how
# many samples (batch sizes, held-out and evaluated samples). Nothing else of a study changes.
SHRINKABLE = {"epochs", "warmup_epochs", "online_warmup_epochs", "knn_every", "steps", "monitor_steps", "iterations",
              "square_queries", "batch_size", "holdout", "max_samples"}


def shrink(config: dict, image_batch: int = 8, video_batch: int = 2, samples: int = 1) -> dict:
    """A copy of a validated study config that runs each stage for one step on tiny data.

    Epochs -> 1 (warm-ups 0, kNN monitor only at the end), every attack or inner-maximisation
    steps -> 1 (AutoAttack: 1 iteration, 1 Square query; k-means: 2 Lloyd iterations), batch
    sizes -> `image_batch` / `video_batch` samples, held-out monitor -> 2 samples, evaluated and
    analysed samples -> `samples` (analyse needs 2). Attack budgets, step sizes, losses, false-
    negative settings, protocols, precisions, corruption names and severities stay the study's.
    """
    c = copy.deepcopy(config)
    for modality, batch in (("image", image_batch), ("video", video_batch)):
        c["pretrain"][modality].update(epochs=1, warmup_epochs=0, knn_every=0, batch_size=batch)
    for method in c["pretrain"]["methods"].values():
        if "online_warmup_epochs" in method:
            method["online_warmup_epochs"] = 0
        if "attack" in method:
            method["attack"]["steps"] = 1
    c["mine"].update(batch_size=image_batch, iterations=2)
    c["finetune"].update(epochs=1, batch_size=image_batch)
    for entry in c["finetune"]["protocols"].values():
        if "steps" in entry:  # alf / aff
            entry.update(epochs=1, steps=1, monitor_steps=1, batch_size=image_batch, holdout=2)
    ev = c["evaluate"]
    ev.update(max_samples=samples, batch_size=max(2, samples))
    for settings in ev["attacks"].values():
        for key, small in (("steps", 1), ("square_queries", 1), ("max_samples", samples)):
            if key in settings:
                settings[key] = small
    ev["pgd_steps_check"]["max_samples"] = samples
    ev["corruptions"]["max_samples"] = samples
    c["analyse"].update(max_samples=2, batch_size=image_batch)
    return c


def leaves(tree, path=()) -> dict:
    """{path tuple: value} of every leaf of a nested dict."""
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(leaves(v, (*path, k)))
        return out
    return {path: tree}


@pytest.mark.parametrize("study", STUDIES)
def test_shrink_touches_only_epochs_steps_and_sample_counts(study):
    config = plan.load_study(REPO / "config" / f"{study}.yaml")
    small = shrink(config)
    before, after = leaves(config), leaves(small)
    assert before.keys() == after.keys()  # nothing added or removed
    changed = {p for p in before if before[p] != after[p]}
    assert changed and all(p[-1] in SHRINKABLE for p in changed), sorted(p for p in changed if p[-1] not in SHRINKABLE)
    # and the settings that make it the paper's study survive
    assert small["pretrain"]["image"]["backbone"] == "resnet18" and small["pretrain"]["video"]["backbone"] in ("r3d_18", "r2plus1d_18")
    assert small["decode"] == config["decode"] and small["evaluate"]["corruptions"]["names"] == config["evaluate"]["corruptions"]["names"]
    assert small["pretrain"]["methods"]["acl"]["attack"]["eps"] == 8 and small["finetune"]["protocols"]["aff"]["training"] == "trades"


# ---- tiny format-faithful data -------------------------------------------------------------------
def write_clip_video(path: Path, label: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_avi(path, coded_frames(label, SOURCE_FRAMES, NATIVE_HW))


def write_ucf101_tree(root: Path) -> None:
    """4 classes (AutoAttack's targeted DLR loss needs 4 or more), the first 2 with a training video
    (group 8), all 4 with a test video (group 1); official classInd and CRLF split files."""
    names = ["ApplyEyeMakeup", "Basketball", "Rowing", "YoYo"]
    train, test = [], []
    for label, name in enumerate(names):
        for group, lines in ((8, train), (1, test)):
            if lines is train and label >= 2:
                continue
            stem = f"v_{name}_g{group:02d}_c01"
            write_clip_video(root / "UCF-101" / name / f"{stem}.avi", label)
            lines.append(f"{name}/{stem}.avi" + (f" {label + 1}" if lines is train else ""))
    split = root / "ucfTrainTestlist"
    split.mkdir(parents=True)
    (split / "classInd.txt").write_text("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(names)))
    for fold in (1, 2, 3):
        (split / f"trainlist0{fold}.txt").write_text("\r\n".join(train) + "\r\n")
        (split / f"testlist0{fold}.txt").write_text("\r\n".join(test) + "\r\n")


def write_hmdb51_tree(root: Path) -> None:
    """4 classes, the first 2 with a training video (id 1), all 4 with a test video (id 2) and an
    unused one (id 0), in the official <class>_test_splitN.txt files."""
    for label, name in enumerate(["brush_hair", "cartwheel", "catch", "chew"]):
        lines = []
        for i, split_id in enumerate((1, 2, 0) if label < 2 else (2, 0)):
            video = f"April_09_{name}_u_nm_np1_ba_goo_{i}.avi"
            write_clip_video(root / "hmdb51_org" / name / video, label)
            lines.append(f"{video} {split_id} \n")
        (root / "testTrainMulti_7030_splits").mkdir(parents=True, exist_ok=True)
        for fold in (1, 2, 3):
            (root / "testTrainMulti_7030_splits" / f"{name}_test_split{fold}.txt").write_text("".join(lines))


def write_fake_roots(root: Path, study: str) -> dict[str, Path]:
    image, video = STUDIES[study]["image"], STUDIES[study]["video"]
    roots = {image: root / image, video: root / video}
    write_cifar(roots[image], image, per_file=2 if image == "cifar10" else 10)  # 10 training images
    (write_ucf101_tree if video == "ucf101" else write_hmdb51_tree)(roots[video])
    return roots


# ---- running the stages as the workflow does --------------------------------------------------------
class Study:
    """One study's stage calls with the sections the Snakefile passes, timed into `report`."""

    def __init__(self, config: dict, results: Path) -> None:
        self.config, self.results, self.report = config, results, {}

    def timed(self, key: str, fn) -> None:
        start = time.perf_counter()
        fn()
        self.report[key] = {"seconds": round(time.perf_counter() - start, 2)}

    def data(self, ds: str) -> Path:
        return self.results / "decode" / ds

    def encoder(self, ds: str, method: str) -> Path:
        return self.results / "pretrain" / ds / method / "seed0" / "encoder.pt"

    def modality(self, ds: str) -> str:
        return "video" if self.config["decode"][ds]["source"] in plan.VIDEO_SOURCES else "image"

    def decode(self, ds: str) -> None:
        cfg = json.dumps(self.config["decode"][ds])
        self.timed(f"decode:{ds}", lambda: decode.main(["--cfg", cfg, "--out", str(self.data(ds)), "--threads", "2"]))

    def pretrain_cfg(self, ds: str, method: str, budget_mb: float | None = None) -> str:
        section = self.config["pretrain"]
        return json.dumps({"device": section["device"], "precision": section["precision"],
                           "budget_mb": section["budget_mb"] if budget_mb is None else budget_mb,
                           "model": section[self.modality(ds)], "method": section["methods"][method]}, sort_keys=True)

    def pretrain(self, ds: str, method: str, budget_mb: float | None = None) -> dict:
        out = self.encoder(ds, method)
        mined = ["--mined", str(self.results / "mine" / ds / "seed0" / "false_negatives.npz")] \
            if self.config["pretrain"]["methods"][method]["false_negatives"] == "mined" else []
        argv = ["--cfg", self.pretrain_cfg(ds, method, budget_mb), "--seed", "0", "--data", str(self.data(ds)), *mined,
                "--out-encoder", str(out), "--out-metrics", str(out.with_name("metrics.json")), "--threads", "2"]
        self.timed(f"pretrain:{ds}:{method}", lambda: pretrain.main(argv))
        return json.loads(out.with_name("metrics.json").read_text())

    def mine(self, ds: str) -> dict:
        out = self.results / "mine" / ds / "seed0"
        argv = ["--cfg", json.dumps(self.config["mine"]), "--seed", "0", "--data", str(self.data(ds)),
                "--encoder", str(self.encoder(ds, self.config["mine"]["warmup_method"])), "--out", str(out), "--threads", "2"]
        self.timed(f"mine:{ds}", lambda: mine.main(argv))
        return json.loads((out / "quality.json").read_text())

    def finetune(self, ds: str, method: str, protocol: str) -> Path:
        section = self.config["finetune"]
        entry = section["protocols"][protocol]
        cfg = json.dumps({**section, "protocols": {protocol: {**entry, "methods": [], "seeds": []}}}, sort_keys=True)
        out = self.results / "finetune" / ds / method / "seed0" / protocol
        argv = ["--cfg", cfg, "--protocol", protocol, "--seed", "0", "--data", str(self.data(ds)), "--encoder",
                str(self.encoder(ds, method)), "--out-model", str(out / "classifier.pt"), "--out-metrics", str(out / "metrics.json"),
                "--threads", "2"]
        self.timed(f"finetune:{ds}:{method}:{protocol}", lambda: finetune.main(argv))
        return out / "classifier.pt"

    def evaluate(self, ds: str, classifier: Path) -> dict:
        out = classifier.parent / "robustness.json"
        argv = ["--cfg", json.dumps(self.config["evaluate"], sort_keys=True), "--seed", "0", "--data", str(self.data(ds)),
                "--model", str(classifier), "--out", str(out), "--threads", "2"]
        self.timed(f"evaluate:{ds}:{classifier.parent.parent.parent.name}:{classifier.parent.name}", lambda: evaluate.main(argv))
        return json.loads(out.read_text())

    def analyse(self, ds: str, methods: list[str]) -> dict:
        out = self.results / "analyse" / ds
        encoders = [arg for m in methods for arg in ("--encoder", f"{m}:0:{self.encoder(ds, m)}")]
        argv = ["--cfg", json.dumps(self.config["analyse"]), "--data", str(self.data(ds)), *encoders,
                "--out-json", str(out / "representation.json"), "--threads", "2"]
        self.timed(f"analyse:{ds}", lambda: analyse.main(argv))
        return json.loads((out / "representation.json").read_text())



def relabel_test_with_predictions(data_dir: Path, classifier: Path, n: int) -> None:
    """Overwrite the first n test labels with the classifier's predictions (a one-step model is
    right by chance only), so that the attacks and AutoAttack have clean-correct clips to attack."""
    import torch

    from pipeline.data import load_split
    from pipeline.models.classifier import load_classifier

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_classifier(classifier, device).eval()
    test = load_split(data_dir, "test", device)
    with torch.no_grad():
        pred = model(test.batch(torch.arange(n, device=device))).argmax(1).cpu().numpy()
    y = np.load(data_dir / "test_y.npy")
    y[:n] = pred
    np.save(data_dir / "test_y.npy", y)
    # the labels changed on purpose: record their new checksum, as decode would (consumers verify it)
    from pipeline.io import sha256_file

    meta = json.loads((data_dir / "meta.json").read_text())
    meta["sha256"]["test_y.npy"] = sha256_file(data_dir / "test_y.npy")
    (data_dir / "meta.json").write_text(json.dumps(meta))


def point_at(config: dict, roots: dict[str, Path]) -> None:
    """Point decode at the fake trees: `root`, and for CIFAR `verify_checksums: false` (random pickles
    are not the official files). Where the data lives, not a setting of the study."""
    for ds, root in roots.items():
        config["decode"][ds]["root"] = str(root)
        if config["decode"][ds]["source"] in ("cifar10", "cifar100"):
            config["decode"][ds]["verify_checksums"] = False


def methods_needed(config: dict, chosen: list[str]) -> list[str]:
    """The chosen methods plus the mining warm-up, warm-up first."""
    warm = config["mine"]["warmup_method"]
    return [warm] + [m for m in chosen if m != warm]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes on a loaded 2-core box (each real-size clip pass takes seconds)
@pytest.mark.parametrize("study", STUDIES)
def test_every_stage_runs_at_real_sizes(study, tmp_path):
    spec = STUDIES[study]
    config = shrink(plan.load_study(REPO / "config" / f"{study}.yaml"))
    roots = write_fake_roots(tmp_path / "raw", study)
    point_at(config, roots)
    s = Study(config, tmp_path / "results")
    image, video = spec["image"], spec["video"]
    for ds in (image, video):
        s.decode(ds)
    clip = np.load(s.data(video) / "train_x.npy", mmap_mode="r")
    assert clip.shape[1:] == (16, 112, 112, 3) and np.load(s.data(image) / "train_x.npy", mmap_mode="r").shape[1:] == (32, 32, 3)

    # images: every chosen method, mined ones after the mine stage; the data fits the budget (on the device)
    methods = methods_needed(config, spec["image_methods"] or list(config["pretrain"]["methods"]))
    mined = [m for m in methods if config["pretrain"]["methods"][m]["false_negatives"] == "mined"]
    for m in [m for m in methods if m not in mined]:
        metrics = s.pretrain(image, m)
        assert metrics["streamed"] is False and len(metrics["history"]) == 1
    assert s.mine(image)["samples"] == len(np.load(s.data(image) / "train_y.npy"))
    for m in mined:
        assert s.pretrain(image, m)["history"][0]["fn_per_anchor"] is not None
    assert json.loads(s.encoder(image, "acl_mined_elim").with_name("metrics.json").read_text())["dual_bn"] is True
    # every protocol on the dual-BN encoder; the evaluation code is the same for every classifier: once
    protocols = list(config["finetune"]["protocols"]) if spec["image_methods"] is None else ["aff"]
    classifiers = {p: s.finetune(image, "acl_mined_elim", p) for p in protocols}
    r = s.evaluate(image, classifiers["aff"])
    assert {"fgsm", "pgd", "autoattack"} <= set(r["attacks"]) and set(r["corruptions"]) <= set(config["evaluate"]["corruptions"]["names"])
    assert s.analyse(image, ["simclr", "acl_mined_elim"])

    # video: R3D-18 / R(2+1)D-18 at 16x112x112; the training clips do not fit a 0.001 MB budget and stream
    for m in VIDEO_METHODS:
        metrics = s.pretrain(video, m, budget_mb=0.001)
        assert metrics["streamed"] is True
    s.mine(video)
    clf = s.finetune(video, "simclr", "aff")
    relabel_test_with_predictions(s.data(video), clf, config["evaluate"]["max_samples"])
    r = s.evaluate(video, clf)
    aa = r["attacks"]["autoattack"]["8.0"]
    assert aa["attacked"] == 1 and aa["within_eps"] and aa["in_range"]  # AutoAttack ran on a clean-correct 5-D clip
    assert set(r["corruptions"]) == set(config["evaluate"]["corruptions"]["names"])  # video corruptions included
    s.analyse(video, VIDEO_METHODS)

    if os.environ.get("PAPER_SCALE_REPORT"):
        path = Path(os.environ["PAPER_SCALE_REPORT"])
        existing = json.loads(path.read_text()) if path.exists() else {}
        path.write_text(json.dumps({**existing, study: s.report}, indent=1))


@pytest.mark.slow
def test_pretrain_checkpoint_resumes_at_real_size(tmp_path, capfd):
    """ResNet-18 at 32x32 stopped after epoch 1 of 2 resumes from its checkpoint and finishes."""
    config = shrink(plan.load_study(REPO / "config" / "cifar10_ucf101.yaml"))
    config["pretrain"]["image"]["epochs"] = 2
    write_cifar(tmp_path / "raw", "cifar10", per_file=2)
    point_at(config, {"cifar10": tmp_path / "raw"})
    s = Study(config, tmp_path / "results")
    s.decode("cifar10")
    cfg_json = s.pretrain_cfg("cifar10", "simclr")
    from pipeline.config import PretrainConfig, from_json

    out = s.encoder("cifar10", "simclr")
    stopped = pretrain.run(from_json(PretrainConfig, cfg_json), cfg_json, 0, s.data("cifar10"), None, out,
                           out.with_name("metrics.json"), stop_after=1)
    assert stopped == {"stopped_after": 1} and out.with_name("checkpoint.pt").exists() and not out.exists()
    metrics = s.pretrain("cifar10", "simclr")
    assert "resumed from" in capfd.readouterr().err
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and not out.with_name("checkpoint.pt").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_gpu_check_cpu_mode_runs_every_part_and_fits_the_device_return(tmp_path):
    """benchmarks/gpu_check.sh with GPU_CHECK_DEVICE=cpu: every part runs and passes, the files in $OUT
    are at most 8 with plain names (what the device machine returns), and the forecast is among them."""
    import re
    import subprocess
    import sys

    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "OUT": str(tmp_path), "PYTHON": sys.executable}
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1700)
    log = (tmp_path / "gpu_check.log").read_text() if (tmp_path / "gpu_check.log").exists() else ""
    assert proc.returncode == 0, proc.stdout[-2000:] + log[-4000:]
    rows = [line.split("\t") for line in (tmp_path / "summary.tsv").read_text().splitlines()[1:]]
    parts = {r[0]: r[1] for r in rows}
    assert list(parts) == ["env", "pretrain", "adv_image", "adv_clip", "evaluate", "cuda_tests", "paper", "ddp", "plan"]
    assert all(rc == "0" for name, rc in parts.items() if name != "ddp") and parts["ddp"].startswith("skipped")
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) and p.parent == tmp_path for p in files)
    assert (tmp_path / "plan.txt").read_text().count("wall time on  64 GPU(s)") == 2
    assert json.loads((tmp_path / "pretrain.json").read_text())


@pytest.mark.parametrize("study", STUDIES)
def test_study_file_dry_runs_against_fake_trees_with_every_job(study, tmp_path):
    """`snakemake -n` with the study file (roots pointed at fake official trees) plans every job:
    each dataset x method x seed pretraining, mining per seed, and every protocol's finetune and evaluate."""
    import shutil
    import subprocess
    import sys

    shutil.copy(REPO / "Snakefile", tmp_path)
    for name in ("workflow", "pipeline", "config"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    roots = write_fake_roots(tmp_path / "fake", study)
    override = "decode={" + ", ".join(f"{ds}: {{root: {root}}}" for ds, root in roots.items()) + "}"
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--configfile", f"config/{study}.yaml",
           "--replace-workflow-config", "--config", override]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in out.split("Job stats:")[1].split("total")[0].splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    config = plan.load_study(REPO / "config" / f"{study}.yaml")
    runs = sum(len(plan.method_seeds(config, m)) for m in config["pretrain"]["methods"])
    assert jobs["pretrain"] == 2 * runs == 78 and jobs["mine"] == 2 * 3 and jobs["decode"] == 2
    matched = len(plan.method_seeds(config, "supervised"))  # the match stage's supervised_matched evaluations
    assert jobs["finetune"] == 2 * runs * 3 and jobs["analyse"] == 2
    assert jobs["match"] == 2 * matched and jobs["evaluate"] == 2 * (runs * 3 + matched)
    planned = plan.study_jobs(config)
    assert all(jobs[stage] == sum(j["stage"] == stage for j in planned) for stage in jobs if stage != "all")
