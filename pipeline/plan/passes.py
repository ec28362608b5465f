"""Backbone passes of every job, counted as the stages' code loops (tests/test_plan.py counts the real stages)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline.config import EvaluateConfig
from pipeline.config.attacks import AttackSettings
from pipeline.plan.anchors import L2_ATTACKS, VIDEO_ONLY_CORRUPTIONS


# ---- passes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Passes:
    """Backbone samples forwarded and backpropagated (fp32/bf16 alike)."""

    fwd: float = 0
    bwd: float = 0

    def __add__(self, other: Passes) -> Passes:
        return Passes(self.fwd + other.fwd, self.bwd + other.bwd)

    def __mul__(self, k: float) -> Passes:
        return Passes(self.fwd * k, self.bwd * k)

    __rmul__ = __mul__

    @property
    def equivalents(self) -> float:
        """Forward+backward equivalents: a forward alone is a third of one."""
        return (self.fwd + 2 * self.bwd) / 3


def grad_passes(n: float) -> Passes:
    """n samples forwarded with gradients and backpropagated."""
    return Passes(n, n)


def forward_passes(n: float) -> Passes:
    return Passes(n, 0)


def pretrain_step_passes(loss: str, batch: int, attack_steps: int = 0) -> Passes:
    """One pretraining step of `pipeline.pretrain` on a batch of B samples.

    ce: one view. supcon / nt_xent / focal_infonce: two views in one pass. clae: two views,
    a no-grad anchor of view 1, s attack steps on view 1, the adversarial view. rocl: a
    no-grad target of view 2, s steps on view 1, then three views. acl: two views, s steps on
    both views, the two adversarial views.
    """
    b, s = batch, attack_steps
    if loss == "ce":
        return grad_passes(b)
    if loss in ("supcon", "nt_xent", "focal_infonce"):
        return grad_passes(2 * b)
    if loss == "clae":
        return grad_passes(2 * b) + forward_passes(b) + grad_passes(s * b) + grad_passes(b)
    if loss == "rocl":
        return forward_passes(b) + grad_passes(s * b) + grad_passes(3 * b)
    if loss == "acl":
        return grad_passes(2 * b) + grad_passes(2 * s * b) + grad_passes(2 * b)
    raise ValueError(f"pretrain.methods.*.loss: no pass model for {loss!r}")


def knn_monitors(epochs: int, knn_every: int) -> int:
    """Times the kNN monitor embeds train and test: every `knn_every` epochs, and once at the end."""
    return (epochs // knn_every if knn_every else 0) + 1


def pretrain_job_passes(model: dict, method: dict, n_train: int, n_test: int) -> Passes:
    """A whole pretraining job: epochs x (n_train // batch) steps (drop_last) + the kNN monitors."""
    steps_per_epoch = n_train // model["batch_size"]
    attack_steps = method["attack"]["steps"] if method["loss"] in ("clae", "rocl", "acl") else 0
    train = pretrain_step_passes(method["loss"], model["batch_size"], attack_steps) * (model["epochs"] * steps_per_epoch)
    return train + forward_passes(n_train + n_test) * knn_monitors(model["epochs"], model["knn_every"])


def mine_views(mine: dict) -> int:
    """Augmented support views the mine stage embeds (FNC, or every algorithm when `compare`)."""
    selecting = bool(mine.get("select_k")) and mine["algorithm"] in ("knn", "fnc")  # the label-free choice of k needs views
    return mine["support_views"] if mine["algorithm"] == "fnc" or mine["compare"] or selecting else 0


def mine_job_passes(n_train: int, views: int = 0, windows: int = 1) -> Passes:
    """The warm-up encoder embeds the training split once per clip window, then once per support view."""
    return forward_passes(n_train * (windows + views))


def match_job_passes(snapshots: int, n_train: int, n_test: int) -> Passes:
    """Per supervised snapshot: features of the train and test splits once (the SLF head trains on them)."""
    return forward_passes(n_train + n_test) * snapshots


def analyse_job_passes(max_samples: int, n_train: int, n_test: int, encoders: int, sensitivity_samples: int = 0,
                       sensitivity_steps: int = 0) -> Passes:
    """Per encoder: the train and test subsets, two augmented views of the test subset, and the feature
    displacement of the first `sensitivity_samples` of it (clean, random corner, PGD steps, result)."""
    train, test = min(max_samples, n_train), min(max_samples, n_test)
    s = min(sensitivity_samples, test)
    return (forward_passes(train + 3 * test + 3 * s) + grad_passes(s * sensitivity_steps)) * encoders


def holdout_split(n_train: int, holdout: int) -> tuple[int, int]:
    """(trained, held-out) sample counts of `pipeline.finetune.adversarial.loop.split_holdout`."""
    held = min(holdout, n_train // 4)
    return n_train - held, held


def adversarial_step_passes(training: str, batch: int, steps: int, full: bool) -> Passes:
    """One ALF (full=False: frozen encoder, no encoder backward) or AFF (full=True) step.

    pgd_at / fgsm_rs: s attack steps, then the adversarial batch. trades: a no-grad clean
    forward, s attack steps, then clean and adversarial batches.
    """
    trained = lambda n: grad_passes(n) if full else forward_passes(n)  # noqa: E731
    if training in ("pgd_at", "fgsm_rs"):
        s = 1 if training == "fgsm_rs" else steps
        return grad_passes(s * batch) + trained(batch)
    if training == "trades":
        return forward_passes(batch) + grad_passes(steps * batch) + trained(2 * batch)
    raise ValueError(f"finetune.protocols.*.training: no pass model for {training!r} (pgd_at, fgsm_rs, trades)")


def finetune_job_passes(protocol: str, section: dict, n_train: int, n_test: int) -> Passes:
    """A whole `pipeline.finetune` job of protocol slf, alf[_x] or aff[_x].

    slf: features of the train and test splits once (the head trains on them). alf/aff: epochs x
    steps, a held-out clean + PGD-`monitor_steps` check per epoch, then train and test accuracy.
    """
    kind = protocol.split("_")[0]
    if kind == "slf":
        return forward_passes(n_train + n_test)
    adv = section["protocols"][protocol]
    trained, held = holdout_split(n_train, adv["holdout"])
    batch = min(adv["batch_size"], trained)
    steps = adv["epochs"] * max(0, trained // batch)
    training = adversarial_step_passes(adv["training"], batch, adv["steps"], full=kind == "aff") * steps
    monitor = (forward_passes(held) + grad_passes(adv["monitor_steps"] * held) + forward_passes(held)) * adv["epochs"]
    return training + monitor + forward_passes(n_train + n_test)


def attack_passes(name: str, settings: AttackSettings, n: int) -> Passes:
    """One attack on n samples, plus the prediction on its output. fgsm and pgd are exact;
    the pyautoattack components (apgd_*, fab_t, square) are their iteration budgets."""
    s = settings
    if name == "fgsm":
        return grad_passes(n) + forward_passes(n)
    if name in ("pgd", "pgd_l2"):
        extra = forward_passes(n * s.restarts) if s.restarts > 1 else Passes()
        return grad_passes(s.steps * s.restarts * n) + extra + forward_passes(n)
    if name == "cw_l2":
        return grad_passes(s.steps * n) + forward_passes(n)
    if name == "apgd_ce":
        return grad_passes(s.steps * s.restarts * n) + forward_passes(n)
    if name in ("apgd_t", "fab_t"):
        return grad_passes(s.steps * s.restarts * s.n_target_classes * n) + forward_passes(n)
    if name == "square":
        return forward_passes(s.queries * s.restarts * n + n)
    raise ValueError(f"evaluate.attacks: no pass model for {name!r}")


@dataclass(frozen=True)
class EvalCost:
    passes: Passes  # fp32 (or evaluate.precision) passes of the attacks, checks and corruptions
    autoattack_clean: float  # clean-correct samples AutoAttack attacks (APGD-CE on each)
    autoattack_robust: float  # samples still robust after APGD-CE (the other three attacks on each)


def epsilons_of(name: str, settings: AttackSettings, cfg: EvaluateConfig) -> list[float]:
    """The eps an attack runs at (its own `epsilons` subset by 1/255 label, else all of its norm's)."""
    return settings.runs_at(cfg.epsilons_l2 if name in L2_ATTACKS else cfg.epsilons)


def evaluate_job_passes(cfg: EvaluateConfig, n_test: int, is_video: bool, clean: float = 1.0, robust: float = 1.0) -> EvalCost:
    """A whole `pipeline.evaluate` job, given the config it receives, on the first min(max_samples, n_test) test samples.

    clean / robust: assumed fractions of clean-correct and AutoAttack-robust samples. Chained
    attacks (cascade: true) are counted on every clean-correct sample, an upper bound; with
    cascade: false every attack runs on all of its samples, and the count is exact.
    """
    n = min(cfg.max_samples, n_test)
    total = forward_passes(n) + forward_passes(1)  # clean predictions; one sample to read the class count
    aa_clean = aa_robust = 0.0
    for name, settings in cfg.attacks.items():
        m = min(n, settings.max_samples)
        for _ in epsilons_of(name, settings, cfg):
            if name == "autoattack":
                total += forward_passes(m) + forward_passes(m)  # its own clean check, then our prediction
                aa_clean += clean * m
                aa_robust += robust * m
                continue
            attacked = clean * m if cfg.cascade else m
            total += attack_passes(name, settings, attacked)
    check = cfg.pgd_steps_check
    if check.factor >= 2 and check.attack in cfg.attacks and cfg.epsilons:
        m = min(n, check.max_samples)
        settings = cfg.attacks[check.attack]
        for steps in (settings.steps, settings.steps * check.factor):  # at each check eps (empty list: the largest only)
            total += attack_passes(check.attack, dataclasses.replace(settings, steps=steps), m) * max(1, len(check.epsilons))
    radius = cfg.radius
    m = min(n, radius.max_samples)
    if m:  # logit margin and clean check, then 1 + bisection_steps PGD probes, each with its prediction
        total += forward_passes(2 * m) + (grad_passes(m * radius.pgd_steps) + forward_passes(m)) * (1 + radius.bisection_steps)
    spec = cfg.corruptions
    names = [c for c in spec.names if is_video or c not in VIDEO_ONLY_CORRUPTIONS]
    total += forward_passes(min(n, spec.max_samples) * len(names) * len(spec.severities))
    return EvalCost(total, aa_clean, aa_robust)
