"""Loading and saving the classifier checkpoint shared by finetune, evaluate and report.

A checkpoint is `{"model": state_dict, "model_args", "num_classes", "protocol", "bn_branch"}`
plus, for SPAT's cosine classifier, `"head": "cosine"` and `"cosine_scale"`: its state-dict
keys are those of a `Classifier`, only its forward differs (normalised features and weights).

Dual-BN encoders (CLAE, ACL: pretrain saves the clean BN branch under the plain names and
the adversarial one as `encoder_adv_bn`) load into the plain `Encoder` with the branch that
`load_encoder` is asked for (config `finetune.dual_bn_branch`). The fine-tuned classifier's
state dict then holds that branch's BatchNorms, so evaluate needs no choice of its own; the
checkpoint's `bn_branch` records it (None for an encoder without dual BN).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.io import load_torch, verify_sibling
from pipeline.models import Classifier, Encoder, build_encoder


class CosineClassifier(Classifier):
    """Encoder + cosine head (SPAT, Hou et al. 2023): logits = scale * cos(W_k, f(x)).

    The linear head's bias stays zero and frozen, so `cosines` are true cosines, as in the
    paper's definition (the reference code also trains a bias).
    """

    def __init__(self, encoder: Encoder, num_classes: int, scale: float) -> None:
        super().__init__(encoder, num_classes)
        self.scale = scale
        torch.nn.init.zeros_(self.head.bias)
        self.head.bias.requires_grad_(False)

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) cosines between the features of x (images or clips) and the class weights."""
        return F.linear(F.normalize(self.encoder(x), dim=1), F.normalize(self.head.weight, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * self.cosines(x)


BN_BRANCHES = ("adv", "clean")
ADV_BN_KEY = "encoder_adv_bn"  # pretrain's copy of a dual-BN encoder with its adversarial BatchNorms


def encoder_bn_branch(state: dict, bn_branch: str) -> str | None:
    """The BN branch a pretrain checkpoint loads with: `bn_branch` for a dual-BN encoder, None otherwise."""
    if bn_branch not in BN_BRANCHES:
        raise ValueError(f"finetune.dual_bn_branch must be one of {BN_BRANCHES}, got {bn_branch!r}")
    return bn_branch if ADV_BN_KEY in state else None


def load_encoder(path: Path, device: torch.device, bn_branch: str = "clean"):
    """Encoder from a pretrain checkpoint, in eval mode, and its checkpoint dict, verified against the
    sha256 pretrain recorded next to it.

    bn_branch ("adv" or "clean"): which BatchNorms of a dual-BN encoder to load; ignored for
    an encoder without dual BN (its checkpoint has one set).
    """
    verify_sibling(path, "metrics.json", "encoder_sha256", "pretrain")
    state = load_torch(path)
    encoder = build_encoder(state["model_args"])
    encoder.load_state_dict(state[ADV_BN_KEY if encoder_bn_branch(state, bn_branch) == "adv" else "encoder"])
    return encoder.to(device).eval(), state


def load_classifier(path: Path, device: torch.device) -> Classifier:
    """Classifier (encoder + linear or cosine head) from a finetune checkpoint, in eval mode."""
    return classifier_from_state(load_classifier_state(path), device)


def load_classifier_state(path: Path) -> dict:
    """A finetune (or match) checkpoint dict, verified against the sha256 recorded in the metrics.json next to it."""
    verify_sibling(path, "metrics.json", "model_sha256", "finetune")
    return load_torch(path)


def classifier_from_state(state: dict, device: torch.device) -> Classifier:
    """Classifier from a loaded finetune checkpoint dict (its `bn_branch` says which BN branch it holds)."""
    encoder = build_encoder(state["model_args"])
    if state.get("head", "linear") == "cosine":
        model: Classifier = CosineClassifier(encoder, state["num_classes"], state["cosine_scale"])
    else:
        model = Classifier(encoder, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
