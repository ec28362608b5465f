"""Typed mirror of `workflow/schemas/config.schema.yaml`: one frozen dataclass per section.

`attacks` holds one settings class per evaluation attack, `build` turns the validated dicts
into these classes (`from_dict`) and back (`to_dict`).

The schema is the single source of defaults (Snakemake's `validate` fills them in); these
dataclasses have no defaults, so a stage run by hand with an incomplete or misspelt config
fails at once, naming the key. `tests/test_config.py` checks that the fields and the
schema's properties are the same sets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.budget import PER_255
from pipeline.config.attacks import ATTACK_SETTINGS, AttackSettings
from pipeline.config.build import from_dict, from_json, parse_entries, to_dict
from pipeline.errors import ConfigError

# Re-exported, so that stage code imports the whole typed config from one place (they live in
# `config.build` and `pipeline.errors`); the section classes below are this module's own.
__all__ = ["ConfigError", "from_dict", "from_json", "to_dict"]


@dataclass(frozen=True)
class EmbedConfig:
    videos_per_class: int
    frames: int
    canvas: int
    sprite: int
    max_speed: float
    fps: int
    crf: int
    seed: int


@dataclass(frozen=True)
class DecodeConfig:
    source: str
    root: str
    download: bool
    verify_checksums: bool
    size: int
    resize: str
    test_fraction: float
    split_seed: int
    fold: int
    frames: int
    stride: int
    clips_per_video: int
    max_bad_fraction: float
    timeout_s: float


@dataclass(frozen=True)
class AugmentSpec:
    """SimCLR-style augmentation strengths (see the `augment` schema section)."""

    crop_scale_min: float  # random resized crop keeps this fraction of the area at least
    flip: float  # probability of a horizontal flip
    jitter_prob: float  # probability of applying colour jitter to a sample
    brightness: float
    contrast: float
    saturation: float
    hue: float  # max hue rotation as a fraction of a full turn (0.5 = 180 degrees)
    grayscale: float  # probability of converting to grayscale
    temporal_crop: int  # clips only: frames kept by a random temporal crop (0 = all frames)
    blur: float  # probability of a Gaussian blur (sigma uniform in [0.1, 2] px, SimCLR); 0 = off


@dataclass(frozen=True)
class ModelConfig:
    backbone: str
    width: int
    small_input: bool
    proj_hidden: int
    proj_dim: int
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: int
    temperature: float
    checkpoint_every: int
    knn_every: int
    knn_k: int
    knn_temperature: float
    compile: bool
    augment: AugmentSpec


@dataclass(frozen=True)
class InnerAttackConfig:
    eps: float = dataclasses.field(metadata=PER_255)  # config: units of 1/255; here Eps, pixel units
    steps: int
    step_size: float  # fraction of eps, as in the config; `step` is the absolute one
    random_start: bool
    bn_mode: str  # "eval" or "train": BatchNorm mode during the inner attack

    @property
    def step(self) -> float:
        """The absolute step in pixel units (the one place the config's fraction is multiplied out)."""
        return self.step_size * self.eps


@dataclass(frozen=True)
class MethodConfig:
    loss: str
    false_negatives: str
    fn_mode: str
    focal_margin: float
    online_threshold: float
    online_warmup_epochs: int
    adv_weight: float
    attack: InnerAttackConfig
    snapshots: int  # encoder snapshots kept along training (the match stage reads the supervised one's)
    seeds: list[int]  # grid-only: which seeds the workflow runs (empty = all); unused by the stage
    epochs: int | None  # the method's own epochs; the job's `model.epochs` already holds it (see grid.pretrain_slice)
    temperature: float | None  # the method's own tau; the job's `model.temperature` already holds it (grid.pretrain_slice)
    fn_recall: float  # false_negatives: oracle: share of each anchor's false negatives flagged (the dose f)
    fn_precision: float  # false_negatives: oracle: precision the flags are diluted to with true negatives


@dataclass(frozen=True)
class PretrainConfig:
    """What one pretrain job receives: its modality's model section and its method."""

    device: str
    precision: str
    budget_mb: float
    model: ModelConfig
    method: MethodConfig


@dataclass(frozen=True)
class MineConfig:
    device: str
    warmup_method: str
    algorithm: str
    clusters: list[int]
    restarts: int
    iterations: int
    knn_k: int
    threshold: float
    batch_size: int
    features: str
    temporal_windows: bool
    support_views: int
    support_aggregate: str
    support_crop_scale_min: float
    compare: bool
    select_k: list[int]  # label-free choice of knn_k among these (split-half agreement); empty: knn_k as written
    stability_tolerance: float  # the smallest k within this of the best agreement is chosen


@dataclass(frozen=True)
class MatchConfig:
    enabled: bool
    tolerance: float  # largest clean-accuracy difference (fraction) still called a match


def parse_protocols(data: Any, where: str) -> dict[str, SlfProtocolConfig | AdversarialConfig]:
    """`finetune.protocols`: `slf` -> SlfProtocolConfig, `alf[_suffix]` / `aff[_suffix]` (the schema's pattern) -> AdversarialConfig."""
    return parse_entries(lambda name: SlfProtocolConfig if name == "slf" else AdversarialConfig, data, where)


def parse_attacks(data: Any, where: str) -> dict[str, AttackSettings]:
    """`evaluate.attacks`: each entry into its attack's settings class (`pipeline.config.attacks`)."""
    return parse_entries(ATTACK_SETTINGS.get, data, where)


@dataclass(frozen=True)
class SlfProtocolConfig:
    methods: list[str]  # grid-only, as in AdversarialConfig
    seeds: list[int]


@dataclass(frozen=True)
class FinetuneConfig:
    """The `finetune` section. A job receives it with `protocols` cut down to its own entry."""

    device: str
    precision: str
    protocols: dict[str, SlfProtocolConfig | AdversarialConfig] = dataclasses.field(metadata={"parse": parse_protocols})
    epochs: int  # epochs, batch_size, lr, weight_decay: the SLF head (and the clean start of `dynamic`)
    batch_size: int
    lr: float
    weight_decay: float
    optimizer: str  # the SLF head's: adam or sgd (momentum 0.9)
    dual_bn_branch: str  # "adv" or "clean": the BN branch of dual-BN encoders (CLAE, ACL) fine-tuned and evaluated


@dataclass(frozen=True)
class TradesConfig:
    beta: float


@dataclass(frozen=True)
class FastAtConfig:
    step_size: float
    guard: str
    guard_drop: float


@dataclass(frozen=True)
class SpatConfig:
    scale: float
    margin: float
    n: float
    beta: float


@dataclass(frozen=True)
class DynamicConfig:
    start: float
    increase: float
    backoff: float
    tolerance: float
    check_every: int
    adv_weight: float


@dataclass(frozen=True)
class AdversarialConfig:
    """One ALF/AFF protocol entry (`$defs/adversarial` of the schema)."""

    methods: list[str]  # grid-only (methods, seeds): which jobs the workflow runs; unused by the stage
    seeds: list[int]
    training: str
    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    encoder_lr: float
    weight_decay: float
    eps: float = dataclasses.field(metadata=PER_255)  # config: units of 1/255; here Eps, pixel units
    steps: int
    step_size: float  # fraction of eps, as in the config (the inner `Attack.step_size` multiplies it out)
    attack_bn: str
    holdout: int
    monitor_steps: int
    trades: TradesConfig
    fgsm_rs: FastAtConfig
    spat: SpatConfig
    dynamic: DynamicConfig


@dataclass(frozen=True)
class StepsCheckConfig:
    factor: int
    max_samples: int
    tolerance: float
    epsilons: list[float]  # 1/255 labels of the eps checked (empty: the largest)
    attack: str  # the iterative attack checked: pgd or apgd_ce


@dataclass(frozen=True)
class RadiusConfig:
    """Per-sample minimal adversarial radius (PGD bisection) and clean logit margin (pipeline.sensitivity)."""

    max_samples: int  # the first test samples measured; 0 = off
    max_eps: float = dataclasses.field(metadata=PER_255)  # the bisection's upper end; a sample not flipped there is censored
    bisection_steps: int
    pgd_steps: int


@dataclass(frozen=True)
class CorruptionsConfig:
    names: list[str]
    severities: list[int]
    max_samples: int


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section. `epsilons` become Eps (pixel units, label `per_255`); L2 budgets
    are in input units already. `attacks` holds each attack's typed settings
    (`pipeline.config.attacks`): their `arguments(eps)` turn a relative `step_size` into the
    absolute step, and an attack's own `epsilons` selects values of `evaluate.epsilons` by
    their 1/255 label."""

    device: str
    precision: str
    max_samples: int
    batch_size: int
    epsilons: list[float] = dataclasses.field(metadata=PER_255)
    epsilons_l2: list[float]
    cascade: bool
    pgd_steps_check: StepsCheckConfig
    radius: RadiusConfig
    attacks: dict[str, AttackSettings] = dataclasses.field(metadata={"parse": parse_attacks})
    corruptions: CorruptionsConfig


@dataclass(frozen=True)
class AnalyseConfig:
    device: str
    max_samples: int
    uniformity_t: float
    batch_size: int
    sensitivity_eps: float = dataclasses.field(metadata=PER_255)  # Linf radius of the feature displacement
    sensitivity_steps: int  # feature-space PGD steps
    sensitivity_samples: int  # test samples (the first of the analysed subset); 0 = off


@dataclass(frozen=True)
class ReportConfig:
    supervised_method: str
    csl_method: str
    claims_protocol: str
    oracle_methods: list[str]
    mined_methods: list[str]
    adversarial_pairs: dict[str, str]
    primary_eps: dict[str, float]  # dataset -> eps in 1/255 units, as the labels of robustness.json; absent: the largest run
    random_init_method: str | None  # the untrained baseline every pretrained encoder must beat
    plateau_fraction: float
    plateau_tolerance: float
    supcon_method: str | None = None  # SupCon, for claim C7 against csl_method (None: no such claim)
    adversarial_protocol: str | None = None  # the protocol claim C5 is scored under (None: claims_protocol)
