"""Pretraining losses: name -> `LossEntry(fn, family, dual_bn)`. Keys are the schema's `method.loss` enum.

Every `fn` is a pure function of logits or projections (the pretrain stage's `steps.py`
makes the views, the adversarial views and the false-negative masks and calls it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.losses.acl import acl
from pipeline.losses.clae import clae
from pipeline.losses.false_negatives import (
    FN_MODES,
    expand_views,
    neighbour_mask,
    same_label_mask,
    similarity_threshold_mask,
    simulated_miner_mask,
)
from pipeline.losses.focal_infonce import focal_infonce
from pipeline.losses.nt_xent import nt_xent
from pipeline.losses.rocl import rocl
from pipeline.losses.supcon import supcon


@dataclass(frozen=True)
class LossEntry:
    """One pretraining loss and what the pretrain stage needs to know about it."""

    fn: Callable[..., torch.Tensor]  # -> scalar loss
    family: str  # "supervised" (labels: logits for ce, two views for supcon), "contrastive" (two views, no labels)
    #              or "adversarial" (views plus adversarial views made by the inner attack)
    dual_bn: bool = False  # adversarial inputs go through their own BatchNorm (CLAE, ACL)


LOSSES: dict[str, LossEntry] = {
    "ce": LossEntry(F.cross_entropy, "supervised"),  # on a linear head's logits, not on projections
    "supcon": LossEntry(supcon, "supervised"),
    "nt_xent": LossEntry(nt_xent, "contrastive"),
    "focal_infonce": LossEntry(focal_infonce, "contrastive"),
    "clae": LossEntry(clae, "adversarial", dual_bn=True),
    "rocl": LossEntry(rocl, "adversarial"),
    "acl": LossEntry(acl, "adversarial", dual_bn=True),
}

__all__ = [
    "FN_MODES",
    "LOSSES",
    "LossEntry",
    "acl",
    "clae",
    "expand_views",
    "focal_infonce",
    "neighbour_mask",
    "nt_xent",
    "rocl",
    "same_label_mask",
    "similarity_threshold_mask",
    "simulated_miner_mask",
    "supcon",
]
