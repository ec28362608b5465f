"""Pretraining losses. Each is a pure function; the registry keys are the schema's `loss` enum."""

from pipeline.losses.acl import acl
from pipeline.losses.clae import clae
from pipeline.losses.false_negatives import (
    FN_MODES,
    expand_views,
    neighbour_mask,
    same_label_mask,
    similarity_threshold_mask,
)
from pipeline.losses.focal_infonce import focal_infonce
from pipeline.losses.inner_attack import linf_pgd
from pipeline.losses.nt_xent import nt_xent
from pipeline.losses.rocl import rocl
from pipeline.losses.supcon import supcon

# Contrastive losses take (z1, z2) and keyword options; "ce" is handled by the
# pretrain stage directly (it needs a classifier head, not projections).
CONTRASTIVE_LOSSES = {"nt_xent": nt_xent, "focal_infonce": focal_infonce}
# Adversarial CSL: the pretrain stage makes the adversarial views (inner attack) and
# passes their projections; CLAE and ACL route adversarial inputs through their own BN.
ADVERSARIAL_LOSSES = {"clae": clae, "rocl": rocl, "acl": acl}
DUAL_BN_LOSSES = ("clae", "acl")
LOSSES = ("ce", "supcon", *CONTRASTIVE_LOSSES, *ADVERSARIAL_LOSSES)

__all__ = [
    "ADVERSARIAL_LOSSES",
    "CONTRASTIVE_LOSSES",
    "DUAL_BN_LOSSES",
    "FN_MODES",
    "LOSSES",
    "acl",
    "clae",
    "expand_views",
    "focal_infonce",
    "linf_pgd",
    "neighbour_mask",
    "nt_xent",
    "rocl",
    "same_label_mask",
    "similarity_threshold_mask",
    "supcon",
]
