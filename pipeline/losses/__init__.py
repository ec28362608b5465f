"""Pretraining losses. Each is a pure function; the registry keys are the schema's `loss` enum."""

from pipeline.losses.false_negatives import FN_MODES, neighbour_mask, same_label_mask, similarity_threshold_mask
from pipeline.losses.focal_infonce import focal_infonce
from pipeline.losses.nt_xent import nt_xent
from pipeline.losses.supcon import supcon

# Contrastive losses take (z1, z2) and keyword options; "ce" is handled by the
# pretrain stage directly (it needs a classifier head, not projections).
CONTRASTIVE_LOSSES = {"nt_xent": nt_xent, "focal_infonce": focal_infonce}
LOSSES = ("ce", "supcon", *CONTRASTIVE_LOSSES)

__all__ = [
    "CONTRASTIVE_LOSSES",
    "FN_MODES",
    "LOSSES",
    "neighbour_mask",
    "focal_infonce",
    "nt_xent",
    "same_label_mask",
    "similarity_threshold_mask",
    "supcon",
]
