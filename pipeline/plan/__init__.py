"""Cost forecast of a study: every job, its GPU-hours and peak memory, and the wall time on N GPUs.

    python -m pipeline.plan --configfile config/cifar10_ucf101.yaml --gpu h100 [--jobs]

Torch-free (it runs on a laptop before anything is installed but the workflow's Python deps).

Model. Every GPU stage is counted in backbone *passes*: one forward of one sample (`fwd`) and
one backward of one sample (`bwd`, weights or input gradient alike), summed over the job
exactly as the stage's code loops (pretraining epochs x steps x views x inner-attack steps,
kNN monitors, fine-tuning attacks and held-out monitors, every evaluation attack, corruption
and sanity check). tests/test_plan.py runs the real stage code on a small model with a
counting wrapper round the backbone and checks these counts sample for sample. A job's time is

    seconds = (fwd + 2 bwd) / 3 / rate(backbone, precision) + overhead

where `rate` is the measured forward+backward throughput (a backward costs about two forwards)
and AutoAttack is timed from its own measured anchor (below). The projection and linear heads,
augmentations, k-means and the loss itself are not counted (each well under 5% of a backbone
pass at these sizes). Evaluation cascades (an attack runs only on samples still robust) and
AutoAttack's cost depend on the accuracies the study will find: the forecast takes the
assumed accuracies of `ACCURACY` and counts chained attacks on every clean-correct sample
(an upper bound: robust <= clean). Wall time on N GPUs is a list-scheduling simulation of the
DAG (longest remaining path first), next to its two lower bounds: the critical path and
total / N.
"""

from __future__ import annotations

# The package's names, as one namespace (`from pipeline import plan; plan.forecast(...)`).
from pipeline.plan.anchors import *  # noqa: F403
from pipeline.plan.anchors import _H100_BF16  # noqa: F401
from pipeline.plan.costs import *  # noqa: F403
from pipeline.plan.jobs import *  # noqa: F403
from pipeline.plan.passes import *  # noqa: F403
from pipeline.plan.schedule import *  # noqa: F403
from pipeline.plan.summary import *  # noqa: F403
