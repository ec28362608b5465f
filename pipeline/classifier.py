"""Loading and saving the classifier checkpoint shared by finetune, evaluate and report.

A checkpoint is `{"model": state_dict, "model_args", "num_classes", "protocol"}` plus, for
SPAT's cosine classifier, `"head": "cosine"` and `"cosine_scale"`: its state-dict keys are
those of a `Classifier`, only its forward differs (normalised features and weights).
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


def load_encoder(path: Path, device: torch.device):
    """Encoder from a pretrain checkpoint, in eval mode, and its checkpoint dict."""
    verify_sibling(path, "metrics.json", "encoder_sha256", "pretrain")
    state = load_torch(path)
    encoder = build_encoder(state["model_args"])
    encoder.load_state_dict(state["encoder"])
    return encoder.to(device).eval(), state


def load_classifier(path: Path, device: torch.device) -> Classifier:
    """Classifier (encoder + linear or cosine head) from a finetune checkpoint, in eval mode."""
    verify_sibling(path, "metrics.json", "model_sha256", "finetune")
    state = load_torch(path)
    encoder = build_encoder(state["model_args"])
    if state.get("head", "linear") == "cosine":
        model: Classifier = CosineClassifier(encoder, state["num_classes"], state["cosine_scale"])
    else:
        model = Classifier(encoder, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
