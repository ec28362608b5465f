"""Pretrain stage: every method trains on images and clips, resumes exactly, guards against NaN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline import runtime
from pipeline.config import DecodeConfig, PretrainConfig, from_dict
from pipeline.data import load_split
from pipeline.health import non_finite_entries
from pipeline.io import load_torch, read_json
from pipeline.losses import nt_xent, same_label_mask, similarity_threshold_mask
from pipeline.models import Encoder
from pipeline.models.classifier import load_encoder
from pipeline.pretrain import (
    STEPS,
    MinedFalseNegatives,
    NonFiniteLoss,
    Projector,
    StepContext,
    acl_views,
    attack_mode,
    build_nets,
    clae_view,
    project,
    rocl_view,
    run,
)
from tests.conftest import SCHEMA, decode_cfg, pretrain_cfg

TINY_PGD = {"eps": 8, "steps": 1, "step_size": 1.0}  # one random-start step keeps the CPU tests fast
ADVERSARIAL = {"clae", "rocl", "rocl_mined_elim", "acl", "acl_oracle_elim"}
METHODS = {
    "supervised": {"loss": "ce"},
    "supcon": {"loss": "supcon"},
    "simclr": {"loss": "nt_xent"},
    "focal": {"loss": "focal_infonce"},
    "oracle_elim": {"loss": "nt_xent", "false_negatives": "oracle", "fn_mode": "eliminate"},
    "mined_attract": {"loss": "nt_xent", "false_negatives": "mined", "fn_mode": "attract"},
    "online": {"loss": "nt_xent", "false_negatives": "online", "online_warmup_epochs": 1, "online_threshold": 0.8},
    "clae": {"loss": "clae", "attack": {"eps": 4, "steps": 1, "step_size": 1.0, "random_start": False, "bn_mode": "train"}},
    "rocl": {"loss": "rocl", "attack": TINY_PGD},
    "rocl_mined_elim": {"loss": "rocl", "false_negatives": "mined", "attack": TINY_PGD},
    "acl": {"loss": "acl", "attack": TINY_PGD},
    "acl_oracle_elim": {"loss": "acl", "false_negatives": "oracle", "attack": TINY_PGD},
}


def pseudo_labels_file(tmp_path, data_dir) -> str:
    labels = np.load(data_dir / "train_y.npy") % 3  # deliberately wrong "mined" labels
    path = tmp_path / "mined.npz"
    np.savez(path, labels=labels)
    return path


def train(tmp_path, data_dir, method, model=None, **kw):
    cfg = pretrain_cfg(method, model)
    mined = pseudo_labels_file(tmp_path, data_dir) if method.get("false_negatives") == "mined" else None
    out = tmp_path / "encoder.pt"
    metrics = run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, data_dir, mined, out, tmp_path / "metrics.json", **kw)
    return metrics, out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_on_images(tmp_path, digits_dir, name):
    epochs = 2 if name in ADVERSARIAL else 3  # adversarial steps cost 2-3 plain ones
    metrics, out = train(tmp_path, digits_dir, METHODS[name], {"epochs": epochs})
    losses = [h["loss"] for h in metrics["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert metrics["knn_acc"] > 0.3  # well above the 0.1 of chance after 3 tiny epochs
    state = load_torch(out)
    assert state["model_args"]["backbone"] == "resnet_small" and not (tmp_path / "checkpoint.pt").exists()


def test_zero_epochs_save_the_random_init_encoder(tmp_path, digits_dir):
    """The random-init baseline (a method's `epochs: 0`): the encoder saved is the seeded initialisation, untouched."""
    metrics, out = train(tmp_path, digits_dir, {"loss": "ce", "epochs": 0}, {"epochs": 0})
    assert metrics["history"] == [] and metrics["train_seconds"] == 0
    runtime.seed_everything(0)
    cfg = from_dict(PretrainConfig, pretrain_cfg({"loss": "ce", "epochs": 0}, {"epochs": 0}))
    fresh = build_nets(cfg, read_json(digits_dir / "meta.json"), False)["encoder"].state_dict()
    saved = load_torch(out)["encoder"]
    assert saved.keys() == fresh.keys() and all(torch.equal(saved[k], fresh[k]) for k in fresh)
    trained_metrics, trained_out = train(tmp_path / "t", digits_dir, {"loss": "ce"}, {"epochs": 1})
    assert any(not torch.equal(load_torch(trained_out)["encoder"][k], saved[k]) for k in saved)  # training does move it


@pytest.mark.parametrize("name", ["supervised", "simclr", "mined_attract", "online", "clae", "rocl", "acl"])
def test_methods_train_on_clips(tmp_path, clips_dir, name):
    model = {"backbone": "r3d_small", "width": 4, "batch_size": 10, "epochs": 2, "augment": {"temporal_crop": 3}}
    metrics, _ = train(tmp_path, clips_dir, METHODS[name], model)
    assert all(np.isfinite(h["loss"]) for h in metrics["history"]) and 0 <= metrics["knn_acc"] <= 1


DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def moving_square(direction: str, rng: np.random.Generator, frames: int = 8, canvas: int = 32, side: int = 10) -> np.ndarray:
    """(T, H, W, 3) uint8: a white square crossing a black canvas in `direction`, 2 px per frame, from a random start."""
    dy, dx = DIRECTIONS[direction]
    y0, x0 = rng.integers(side, canvas - 2 * side, size=2)
    video = np.zeros((frames, canvas, canvas, 3), np.uint8)
    for t in range(frames):
        y = int(np.clip(y0 + 2 * dy * (t - frames // 2), 0, canvas - side))
        x = int(np.clip(x0 + 2 * dx * (t - frames // 2), 0, canvas - side))
        video[t, y:y + side, x:x + side] = 255
    return video


@pytest.fixture(scope="module")
def motion_clips_dir(tmp_path_factory) -> Path:
    """Separable clips in the real format: H.264 files of 4 motion directions in a class-folder tree, decoded."""
    from pipeline.datasets.video_io import write_h264
    from pipeline.decode import run as decode

    root, rng = tmp_path_factory.mktemp("motion"), np.random.default_rng(0)
    for split, n in (("train", 16), ("test", 8)):
        for d in DIRECTIONS:
            (root / "videos" / split / d).mkdir(parents=True)
            for i in range(n):
                write_h264(root / "videos" / split / d / f"{d}_{i:02d}.mp4", moving_square(d, rng))
    cfg = decode_cfg(source="video_folder", root=str(root / "videos"), size=16, frames=4, stride=2)
    decode(from_dict(DecodeConfig, cfg), root / "clips", threads=2)
    return root / "clips"


@pytest.mark.parametrize("name", ["supervised", "simclr"])
def test_methods_learn_on_separable_clips(tmp_path, motion_clips_dir, name):
    """On clips whose class is the motion direction, 8 epochs lower the loss and leave kNN far above chance (1/4)."""
    model = {"backbone": "r3d_small", "width": 4, "batch_size": 16, "epochs": 8, "augment": {"temporal_crop": 3}}
    metrics, _ = train(tmp_path, motion_clips_dir, METHODS[name], model)
    losses = [h["loss"] for h in metrics["history"]]
    assert all(np.isfinite(losses)) and min(losses[-3:]) < 0.95 * losses[0]
    assert metrics["knn_acc"] >= 0.75


def test_resumed_run_ends_with_the_same_weights(tmp_path, digits_dir):
    method, model = METHODS["oracle_elim"], {"epochs": 3}
    full, full_out = train(tmp_path / "full", digits_dir, method, model)
    (tmp_path / "cut").mkdir()
    stopped = train(tmp_path / "cut", digits_dir, method, model, stop_after=1)[0]
    assert stopped == {"stopped_after": 1} and (tmp_path / "cut" / "checkpoint.pt").exists()
    resumed, resumed_out = train(tmp_path / "cut", digits_dir, method, model)
    a, b = load_torch(full_out)["encoder"], load_torch(resumed_out)["encoder"]
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), atol=1e-5), key
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in full["history"]], abs=1e-5)


def test_checkpoint_from_other_settings_is_not_resumed(tmp_path, digits_dir):
    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2}, stop_after=1)
    metrics, _ = train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2, "lr": 0.2})
    assert len(metrics["history"]) == 2 and metrics["history"][0]["epoch"] == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits_dir):
    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3}, stop_after=1)
    before = load_torch(tmp_path / "checkpoint.pt")["epoch"]
    with pytest.raises(NonFiniteLoss, match="epoch"):
        train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3, "lr": 1e30})
    assert before == 1 and not (tmp_path / "encoder.pt").exists()


def test_mined_file_masks_exactly_its_pairs(tmp_path, digits_dir):
    path = pseudo_labels_file(tmp_path, digits_dir)
    mined = MinedFalseNegatives(path, torch.device("cpu"))
    idx = torch.tensor([5, 17, 2, 40, 41])
    labels = torch.from_numpy(np.load(path)["labels"])
    assert torch.equal(mined.mask(idx), same_label_mask(labels[idx]))
    nb = tmp_path / "nb.npz"
    np.savez(nb, neighbours=np.array([[1, -1], [0, 2], [-1, -1]]))
    m = MinedFalseNegatives(nb, torch.device("cpu")).mask(torch.tensor([0, 1, 2]))
    assert m[0, 1] and m[1, 2] and m[2, 1] and not m[0, 2]


def test_step_registry_covers_the_schema_losses():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert set(STEPS) == set(schema["$defs"]["method"]["properties"]["loss"]["enum"])


def step_context(data_dir, method: dict, seed: int = 0) -> tuple[StepContext, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training context on 32 real digits (the model trained for nothing: the attack is what is tested)."""
    cfg = from_dict(PretrainConfig, pretrain_cfg(method))
    torch.manual_seed(seed)
    nets = build_nets(cfg, read_json(data_dir / "meta.json"), False).train()
    rt = runtime.setup("cpu", "fp32")
    train = load_split(data_dir, "train", rt.device)
    idx = torch.arange(32)
    return StepContext(cfg, nets, Projector(nets), rt, None, torch.Generator().manual_seed(seed)), train.batch(idx), train.y[idx], idx


def test_clae_view_raises_the_contrastive_loss_within_eps(digits_dir):
    ctx, x, y, idx = step_context(digits_dir, {"loss": "clae", "attack": {"eps": 8, "steps": 1, "step_size": 1.0,
                                                                         "random_start": False, "bn_mode": "eval"}})
    v1, _ = ctx.views(x)
    x_adv = clae_view(ctx, v1, None)
    assert (x_adv - v1).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad(), attack_mode(ctx):
        anchor = project(ctx.nets, v1, adversarial=True)
        before = nt_xent(anchor, project(ctx.nets, v1, True), temperature=0.5)
        after = nt_xent(anchor, project(ctx.nets, x_adv, True), temperature=0.5)
    assert after > before + 1e-3


@pytest.mark.parametrize("loss", ["rocl", "acl"])
def test_pgd_views_raise_their_objective_within_eps_and_the_unit_box(digits_dir, loss):
    attack = {"eps": 8, "steps": 3, "step_size": 0.5, "random_start": True, "bn_mode": "eval"}
    ctx, x, y, idx = step_context(digits_dir, {"loss": loss, "false_negatives": "oracle", "attack": attack})
    v1, v2 = ctx.views(x)
    with torch.no_grad(), attack_mode(ctx):
        if loss == "rocl":
            x_clean, x_adv = v1, rocl_view(ctx, v1, v2, y, idx)
            value = lambda xa: nt_xent(project(ctx.nets, xa), project(ctx.nets, v2), temperature=0.5,  # noqa: E731
                                       fn_mask=same_label_mask(y))
        else:
            x_clean = torch.cat([v1, v2])
            x_adv = acl_views(ctx, x_clean, y, idx)
            value = lambda xa: nt_xent(*project(ctx.nets, xa, True).chunk(2), temperature=0.5,  # noqa: E731
                                       fn_mask=same_label_mask(y))
        assert (x_adv - x_clean).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        assert value(x_adv) > value(x_clean) + 1e-3


@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_inner_attack_bn_mode_decides_whether_running_statistics_move(digits_dir, bn_mode):
    attack = {"eps": 8, "steps": 2, "step_size": 0.5, "random_start": True, "bn_mode": bn_mode}
    ctx, x, y, idx = step_context(digits_dir, {"loss": "rocl", "attack": attack})
    v1, v2 = ctx.views(x)
    bn = ctx.nets["encoder"].backbone.stem[1]
    before = bn.running_mean.clone()
    rocl_view(ctx, v1, v2, y, idx)
    assert torch.equal(bn.running_mean, before) == (bn_mode == "eval")
    assert ctx.nets.training  # the training mode is restored after the attack


def test_dual_bn_encoder_checkpoint_loads_into_the_plain_encoder(tmp_path, digits_dir):
    metrics, out = train(tmp_path, digits_dir, METHODS["acl"], {"epochs": 1})
    assert metrics["dual_bn"] and metrics["inner_attack"]["bn_mode"] == "eval"
    assert metrics["inner_attack"]["eps"] == pytest.approx(8 / 255) and metrics["inner_attack"]["precision"] == "float32"
    encoder, state = load_encoder(out, torch.device("cpu"))  # the loader mine/finetune/evaluate/analyse use
    assert isinstance(encoder, Encoder) and set(state["encoder_adv_bn"]) == set(state["encoder"])
    key = "backbone.stem.1.running_mean"
    assert not torch.allclose(state["encoder"][key], state["encoder_adv_bn"][key])  # two sets of statistics


def test_resumed_adversarial_run_ends_with_the_same_weights(tmp_path, digits_dir):
    method, model = METHODS["acl_oracle_elim"], {"epochs": 2}
    full, full_out = train(tmp_path / "full", digits_dir, method, model)
    (tmp_path / "cut").mkdir()
    train(tmp_path / "cut", digits_dir, method, model, stop_after=1)
    resumed, resumed_out = train(tmp_path / "cut", digits_dir, method, model)
    a, b = load_torch(full_out), load_torch(resumed_out)
    for part in ("encoder", "encoder_adv_bn"):
        for key in a[part]:
            assert torch.allclose(a[part][key].float(), b[part][key].float(), atol=1e-5), (part, key)


def test_online_false_negatives_start_after_the_warm_up(tmp_path, digits_dir):
    metrics, _ = train(tmp_path, digits_dir, METHODS["online"], {"epochs": 2})
    first, second = metrics["history"]
    assert "fn_per_anchor" not in first  # warm-up epoch: plain SimCLR
    assert second["fn_per_anchor"] > 0 and 0 <= second["fn_precision"] <= 1 and 0 <= second["fn_recall"] <= 1
    ctx, _, y, idx = step_context(digits_dir, METHODS["online"])
    z1, z2 = torch.randn(32, 8), torch.randn(32, 8)
    assert ctx.mask(y, idx, z1, z2) is None
    ctx.epoch = 1
    assert torch.equal(ctx.mask(y, idx, z1, z2), similarity_threshold_mask(z1, z2, 0.8))


def test_streamed_data_trains_exactly_like_device_resident_data(tmp_path, digits_dir):
    resident, resident_out = train(tmp_path / "resident", digits_dir, METHODS["simclr"], {"epochs": 1})
    cfg = pretrain_cfg(METHODS["simclr"], {"epochs": 1})
    cfg["budget_mb"] = 0.0  # nothing fits: the split stays memory-mapped and is prefetched per batch
    out = tmp_path / "streamed" / "encoder.pt"
    streamed = run(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, digits_dir, None, out, out.with_name("metrics.json"))
    assert streamed["streamed"] and not resident["streamed"]
    a, b = load_torch(resident_out)["encoder"], load_torch(out)["encoder"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_compile_flag_trains_like_eager(tmp_path, digits_dir, monkeypatch):
    import pipeline.pretrain.loop as stage  # `maybe_compile` reads the backend from its own module

    monkeypatch.setattr(stage, "COMPILE_BACKEND", "eager")  # dynamo tracing without inductor's C++ build
    model = {"epochs": 1, "batch_size": 256}
    plain, plain_out = train(tmp_path / "plain", digits_dir, METHODS["simclr"], model)
    compiled, compiled_out = train(tmp_path / "compiled", digits_dir, METHODS["simclr"], {**model, "compile": True})
    assert compiled["compile"] and not plain["compile"]
    a, b = load_torch(plain_out)["encoder"], load_torch(compiled_out)["encoder"]
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
def test_cuda_streamed_batches_equal_resident_batches(digits_dir):
    from pipeline.data import batch_indices, prefetched

    dev = torch.device("cuda")
    resident, streamed = load_split(digits_dir, "train", dev), load_split(digits_dir, "train", dev, budget_mb=0)
    batches = list(batch_indices(len(resident), 100, shuffle=True, drop_last=False, generator=torch.Generator().manual_seed(0)))
    for (i1, x1), (i2, x2) in zip(prefetched(resident, batches), prefetched(streamed, batches), strict=True):
        assert torch.equal(i1, i2) and torch.equal(x1, x2)


@cuda
def test_cuda_inner_attack_in_bf16_channels_last_stays_in_bounds(digits_dir):
    ctx, x, y, idx = step_context(digits_dir, {"loss": "acl", "attack": {"eps": 8, "steps": 3, "step_size": 0.5}})
    ctx.rt = runtime.setup("cuda", "bf16")
    ctx.nets = runtime.prepare_module(ctx.nets, ctx.rt, False)
    ctx.gen = torch.Generator(device="cuda").manual_seed(0)
    x, y, idx = ctx.rt.to_memory_format(x.cuda()), y.cuda(), idx.cuda()
    with ctx.rt.autocast():
        v = torch.cat(ctx.views(x))
        x_adv = acl_views(ctx, v, y, idx)
    assert x_adv.is_contiguous(memory_format=torch.channels_last)
    assert (x_adv - v).abs().max() <= 8 / 255 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1


def test_cpu_runtime_keeps_freed_memory_in_the_heap():
    """On glibc, mallopt accepts both settings (returns 1); elsewhere the call is a no-op."""
    import platform

    from pipeline import runtime

    applied = runtime.keep_freed_memory_in_heap()
    assert applied == (platform.libc_ver()[0] == "glibc")
    assert runtime.setup("cpu", "auto", threads=1).dtype == torch.float32


def test_non_finite_state_is_never_checkpointed(tmp_path, digits_dir, monkeypatch):
    """A finite loss with an inf BatchNorm running_var (the issue's epoch-1 state) is not a good checkpoint."""
    import pipeline.pretrain.loop as loop  # the module that calls train_epoch

    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3}, stop_after=1)
    good = load_torch(tmp_path / "checkpoint.pt")
    real_epoch = loop.train_epoch

    def poisoned_epoch(ctx, *args):
        stats = real_epoch(ctx, *args)
        bn = next(m for m in ctx.nets.modules() if isinstance(m, torch.nn.BatchNorm2d))
        bn.running_var.fill_(float("inf"))  # the loss stays finite: only the checkpoint check can see it
        return stats

    monkeypatch.setattr(loop, "train_epoch", poisoned_epoch)
    with pytest.raises(NonFiniteLoss, match="running_var") as error:
        train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 3})
    kept = load_torch(tmp_path / "checkpoint.pt")
    assert kept["epoch"] == good["epoch"] == 1 and not non_finite_entries(kept["nets"])
    assert "resumes from" in str(error.value) and "after epoch 1" in str(error.value)
    assert not (tmp_path / "encoder.pt").exists()


def test_non_finite_checkpoint_is_not_resumed(tmp_path, digits_dir):
    """A checkpoint written before the check (inf buffer) is ignored: the rerun starts from scratch."""
    from pipeline.io import save_torch

    train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2}, stop_after=1)
    state = load_torch(tmp_path / "checkpoint.pt")
    name = next(k for k in state["nets"] if k.endswith("running_var"))
    state["nets"][name].fill_(float("inf"))
    save_torch(tmp_path / "checkpoint.pt", state)
    metrics, out = train(tmp_path, digits_dir, METHODS["simclr"], {"epochs": 2})
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # retrained epoch 1, not resumed
    assert not non_finite_entries(load_torch(out)["encoder"])
