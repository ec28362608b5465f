"""Stage `pretrain`: one encoder per (dataset, method, seed).

Methods (config `pretrain.methods.<name>.loss`): supervised cross-entropy, SupCon, SimCLR
(NT-Xent), focal-InfoNCE, and adversarial CSL: CLAE (an FGSM/PGD view that raises NT-Xent,
adversarial BatchNorm), RoCL (instance-wise PGD view as an extra positive) and ACL (clean
pair + PGD pair, adversarial BatchNorm). Every method uses the same batched on-device
augmentations; every contrastive loss takes a false-negative mask from oracle labels, the
mine stage's file or the online similarity threshold, applied by elimination or attraction.

The data stays on the device as uint8 when it fits `budget_mb`, else it streams from the
memory-mapped arrays with prefetch. A checkpoint is written atomically every
`checkpoint_every` epochs and a rerun resumes from it; a non-finite loss stops the stage
and keeps the last good checkpoint.

Several GPUs (a SLURM job with `gpu: N`): the stage relaunches itself under torchrun, one
rank per GPU (`pipeline/distributed.py`). Every rank draws the same global batch and trains
on its shard under DistributedDataParallel (SyncBatchNorm on CUDA); the projections, labels
and indices of all ranks are gathered before the loss, so the loss and the false-negative
masks see the global batch exactly as one process would. Inner attacks (CLAE, RoCL, ACL)
run on each rank's shard, as multi-GPU implementations of these methods do. Rank 0 alone
writes checkpoints, outputs and logs.

    python -m pipeline.pretrain --cfg '<json>' --seed 0 --data results/decode/digits \
        [--mined results/mine/digits/seed0/false_negatives.npz] \
        --out-encoder .../encoder.pt --out-metrics .../metrics.json

Where things are: `steps.py`, one function per method (what ACL does in a step);
`context.py`, the step context, nets and false-negative masks; `loop.py`, the training
loop and the metrics; `checkpoint.py`, the resumable checkpoint and the encoder file;
`cli.py`, the command line (`__main__.py` runs it).
"""

from pipeline.pretrain.checkpoint import config_fingerprint, save_checkpoint, save_encoder, try_resume
from pipeline.pretrain.cli import main
from pipeline.pretrain.context import (
    FN_SOURCES,
    MinedFalseNegatives,
    Projector,
    StepContext,
    build_nets,
    gather_batch,
    online_mask,
    project,
)
from pipeline.pretrain.loop import COMPILE_BACKEND, NonFiniteLoss, maybe_compile, run, run_summary, train_and_save, train_epoch, train_step
from pipeline.pretrain.steps import STEPS, acl_views, attack_mode, clae_view, inner_attack, method_loss, rocl_view

__all__ = [
    "COMPILE_BACKEND", "FN_SOURCES", "STEPS", "MinedFalseNegatives", "NonFiniteLoss", "Projector", "StepContext", "acl_views",
    "attack_mode", "build_nets", "clae_view", "config_fingerprint", "gather_batch", "inner_attack", "main", "maybe_compile",
    "method_loss", "online_mask", "project", "rocl_view", "run", "run_summary", "save_checkpoint", "save_encoder", "train_and_save",
    "train_epoch", "train_step", "try_resume",
]
