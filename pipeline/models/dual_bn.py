"""Dual BatchNorm (AdvProp, Xie et al. 2020): adversarial inputs keep their own BN statistics.

CLAE and ACL normalise adversarial examples with a second set of BatchNorm layers, so the
clean statistics (the ones every later stage uses) never see adversarial inputs. torch has
no such module, hence this small mechanism:

    nets = convert_dual_bn(nets)          # every BatchNorm{1,2,3}d -> DualBatchNorm
    with adversarial_bn(nets):            # forward passes in here use the adversarial BNs
        z_adv = nets(x_adv)
    branch_state_dict(nets, "clean")      # the clean branch under the plain module's names

so a dual-BN checkpoint loads into the plain `Encoder` that mine, finetune, evaluate and
analyse build.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class DualBatchNorm(nn.Module):
    """Two BatchNorms of one kind: `clean` by default, `adv` while `adversarial` is set.

    Both start as copies of the wrapped layer; they have separate affine parameters and
    running statistics, as in AdvProp and ACL.
    """

    def __init__(self, bn: nn.Module) -> None:
        super().__init__()
        self.clean = bn
        self.adv = copy.deepcopy(bn)
        self.adversarial = False  # set only through `adversarial_bn`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adv(x) if self.adversarial else self.clean(x)


def convert_dual_bn(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d below `module` (in place) by a DualBatchNorm; returns it."""
    for name, child in module.named_children():
        if isinstance(child, BATCH_NORMS):
            setattr(module, name, DualBatchNorm(child))
        elif not isinstance(child, DualBatchNorm):
            convert_dual_bn(child)
    return module


def has_dual_bn(module: nn.Module) -> bool:
    return any(isinstance(m, DualBatchNorm) for m in module.modules())


@contextmanager
def adversarial_bn(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Route forward passes of every DualBatchNorm in `module` to its adversarial branch.

    A no-op for modules without dual BN (`enabled=False` is one too), so callers need not
    know whether the method uses it. The previous routing is restored on exit.
    """
    duals = [m for m in module.modules() if isinstance(m, DualBatchNorm)] if enabled else []
    before = [m.adversarial for m in duals]
    for m in duals:
        m.adversarial = True
    try:
        yield
    finally:
        for m, b in zip(duals, before, strict=True):
            m.adversarial = b


def branch_state_dict(module: nn.Module, branch: str = "clean") -> dict[str, torch.Tensor]:
    """State dict with one branch of each DualBatchNorm under the plain BN's names.

    With branch "clean", `a.bn1.clean.weight` becomes `a.bn1.weight` and `a.bn1.adv.*` is
    left out ("adv" the other way round), so the result loads into the module built without
    dual BN. For a module without dual BN this is its ordinary state dict.
    """
    if branch not in ("clean", "adv"):
        raise ValueError(f"branch must be 'clean' or 'adv', got {branch!r}")
    prefixes = [f"{name}." for name, m in module.named_modules() if isinstance(m, DualBatchNorm)]
    out = {}
    for key, value in module.state_dict().items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            out[key] = value
        elif key.startswith(f"{prefix}{branch}."):
            out[prefix + key[len(prefix) + len(branch) + 1:]] = value
    return out
