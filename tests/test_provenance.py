"""Stage code hashes cover exactly the pipeline modules a stage imports."""

from __future__ import annotations

from pathlib import Path

from pipeline.provenance import PACKAGE_DIR, stage_sources


def names(module: str) -> set[str]:
    return {str(p.relative_to(PACKAGE_DIR)) for p in stage_sources(module)}


def test_evaluate_depends_on_attacks_not_on_pretrain_or_losses():
    deps = names("pipeline.evaluate")
    assert {"evaluate.py", "attacks/__init__.py", "attacks/pgd.py", "attacks/fgsm.py", "models/__init__.py", "__init__.py"} <= deps
    assert "pretrain.py" not in deps and "losses/nt_xent.py" not in deps and "report.py" not in deps


def test_pretrain_depends_on_losses_and_augment_not_attacks():
    deps = names("pipeline.pretrain")
    assert {"losses/nt_xent.py", "losses/contrastive.py", "augment.py", "optim.py"} <= deps
    assert "attacks/pgd.py" not in deps and "evaluate.py" not in deps


def test_decode_does_not_depend_on_models():
    deps = names("pipeline.decode")
    assert "datasets/video_io.py" in deps and not any(d.startswith("models/") for d in deps)


def test_every_stage_module_parses():
    for stage in ("embed", "decode", "pretrain", "mine", "finetune", "evaluate", "analyse", "report"):
        assert (Path(PACKAGE_DIR) / f"{stage}.py") in stage_sources(f"pipeline.{stage}")
