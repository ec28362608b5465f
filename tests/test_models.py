"""Backbone registry: every entry builds, runs forward and backward, and the small ResNet is faithful."""

from __future__ import annotations

import pytest
import torch

from pipeline.models import Classifier, Encoder, Normalize
from pipeline.models.backbones import BACKBONES, VIDEO_BACKBONES


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_small_resnet_at_full_width_has_torchvision_resnet18_parameters():
    from torchvision.models import resnet18

    small, _ = BACKBONES["resnet_small"](64, False)
    tv = resnet18(weights=None)
    assert count(small) == count(tv) - count(tv.fc)


def test_small_r3d_at_full_width_matches_torchvision_r3d_layout():
    from torchvision.models.video import r3d_18

    from pipeline.models.resnet_small import SmallResNet

    ours = SmallResNet([64, 128, 256, 512], [2, 2, 2, 2], dims=3, small_input=False)
    tv = r3d_18(weights=None)
    assert count(ours) == count(tv) - count(tv.fc)


SMALL_INPUT = {"x3d_xs": (1, 3, 4, 32, 32), "x3d_s": (1, 3, 4, 32, 32)}


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_backbone_forward_backward(name):
    width = 64 if name in {"resnet18", "resnet50", "r3d_18", "r2plus1d_18", "mc3_18"} else 4
    shape = SMALL_INPUT.get(name, (2, 3, 4, 16, 16) if name in VIDEO_BACKBONES else (2, 3, 16, 16))
    encoder = Encoder(name, width, True, [0.5] * 3, [0.25] * 3)
    model = Classifier(encoder, 5)
    x = torch.rand(shape)
    logits = model(x)
    assert logits.shape == (shape[0], 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_normalize_handles_images_and_clips():
    norm = Normalize([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    img, clip = torch.ones(2, 3, 4, 4), torch.ones(2, 3, 5, 4, 4)
    assert torch.allclose(norm(img)[:, 1], torch.full((2, 4, 4), 1.6))
    assert torch.allclose(norm(clip)[:, 2], torch.full((2, 5, 4, 4), 1.4))


def test_fixed_width_backbones_refuse_other_widths():
    with pytest.raises(ValueError, match="fixed width 64"):
        BACKBONES["resnet18"](16, True)


def test_dual_bn_keeps_separate_running_statistics():
    from pipeline.models.dual_bn import DualBatchNorm, adversarial_bn, convert_dual_bn

    torch.manual_seed(0)
    encoder = Encoder("resnet_small", 4, True, [0.0] * 3, [1.0] * 3)
    plain = copy_of(encoder)
    dual = convert_dual_bn(encoder).train()
    assert sum(isinstance(m, DualBatchNorm) for m in dual.modules()) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    clean, adv = torch.rand(8, 3, 8, 8), torch.rand(8, 3, 8, 8) * 0.1 + 0.9  # two very different input statistics
    dual(clean)
    with adversarial_bn(dual):
        dual(adv)
    plain.train()(clean)  # the clean branch must match a plain BN that never saw `adv`
    stem_dual, stem_plain = dual.backbone.stem[1], plain.backbone.stem[1]
    assert torch.allclose(stem_dual.clean.running_mean, stem_plain.running_mean, atol=1e-6)
    assert torch.allclose(stem_dual.clean.running_var, stem_plain.running_var, atol=1e-6)
    assert not torch.allclose(stem_dual.adv.running_mean, stem_dual.clean.running_mean, atol=1e-3)
    assert stem_dual.clean.num_batches_tracked == 1 and stem_dual.adv.num_batches_tracked == 1
    assert not any(m.adversarial for m in dual.modules() if isinstance(m, DualBatchNorm))  # routing restored


def test_dual_bn_branches_load_into_the_plain_encoder():
    from pipeline.models.dual_bn import adversarial_bn, branch_state_dict, convert_dual_bn

    torch.manual_seed(1)
    dual = convert_dual_bn(Encoder("r3d_small", 4, True, [0.5] * 3, [0.25] * 3)).train()
    x = torch.rand(3, 3, 4, 8, 8)
    dual(x)
    with adversarial_bn(dual):
        dual(x * 0.5)
    dual.eval()
    for branch, adversarial in (("clean", False), ("adv", True)):
        plain = Encoder("r3d_small", 4, True, [0.5] * 3, [0.25] * 3)
        plain.load_state_dict(branch_state_dict(dual, branch))  # strict: same names, nothing left over
        with torch.no_grad(), adversarial_bn(dual, adversarial):
            assert torch.allclose(plain.eval()(x), dual(x), atol=1e-5)


def copy_of(module: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(module)


def test_resnet50_is_torchvision_resnet50_with_the_cifar_stem():
    from torchvision.models import resnet50

    net, dim = BACKBONES["resnet50"](64, True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    tv = resnet50(weights=None)
    # the CIFAR stem swaps the 7x7 conv (9,408 weights) for a 3x3 one (1,728); fc (2048 x 1000 + 1000) is dropped
    assert dim == 2048 and count(net) == count(tv) - count(tv.fc) - 64 * 3 * 7 * 7 + 64 * 3 * 3 * 3
    assert isinstance(net.maxpool, torch.nn.Identity)
