"""Loading and saving the classifier checkpoint shared by finetune, evaluate and report."""

from __future__ import annotations

from pathlib import Path

import torch

from pipeline.io import load_torch
from pipeline.models import Classifier, build_encoder


def load_encoder(path: Path, device: torch.device):
    """Encoder from a pretrain checkpoint, in eval mode, and its checkpoint dict."""
    state = load_torch(path)
    encoder = build_encoder(state["model_args"])
    encoder.load_state_dict(state["encoder"])
    return encoder.to(device).eval(), state


def load_classifier(path: Path, device: torch.device) -> Classifier:
    """Classifier (encoder + linear head) from a finetune checkpoint, in eval mode."""
    state = load_torch(path)
    model = Classifier(build_encoder(state["model_args"]), state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()
