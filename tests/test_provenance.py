"""Stage code hashes cover exactly the pipeline modules a stage imports."""

from __future__ import annotations

from pipeline import provenance
from pipeline.provenance import PACKAGE_DIR, module_file, stage_sources
from tests.conftest import REPO


def names(module: str) -> set[str]:
    return {str(p.relative_to(PACKAGE_DIR)) for p in stage_sources(module)}


def test_evaluate_depends_on_attacks_not_on_pretrain_or_losses():
    deps = names("pipeline.evaluate")
    assert {"evaluate/__init__.py", "attacks/__init__.py", "attacks/pgd.py", "attacks/fgsm.py", "models/__init__.py", "__init__.py"} <= deps
    assert not any(d.startswith(("pretrain", "report/")) for d in deps) and "losses/nt_xent.py" not in deps


def test_pretrain_depends_on_losses_and_augment_not_attacks():
    deps = names("pipeline.pretrain")
    assert {"losses/nt_xent.py", "losses/contrastive.py", "augment.py", "optim.py"} <= deps
    assert not any(d.startswith(("attacks/", "evaluate/")) for d in deps)


def test_pretrain_package_covers_its_files():
    """The stage is a package: its hash covers every file of it (the CLI and the one PGD core included)."""
    deps = names("pipeline.pretrain")
    assert {f"pretrain/{f}.py" for f in ("__init__", "steps", "loop", "checkpoint", "context", "cli")} <= deps
    assert "linf_pgd.py" in deps


def test_the_shared_pgd_core_is_not_in_the_attacks_package():
    """pretrain and finetune use the one Linf PGD core without depending on the evaluation attacks."""
    for stage in ("pipeline.pretrain", "pipeline.finetune"):
        deps = names(stage)
        assert "linf_pgd.py" in deps and not any(d.startswith("attacks/") for d in deps), stage
    assert "linf_pgd.py" in names("pipeline.evaluate")


def test_decode_does_not_depend_on_models():
    deps = names("pipeline.decode")
    assert "datasets/video_io.py" in deps and not any(d.startswith("models/") for d in deps)


STAGES = ("embed", "decode", "pretrain", "mine", "finetune", "match", "evaluate", "analyse", "report")


def test_every_rule_has_its_stage_package_and_test():
    """One name per stage: workflow/rules/<stage>.smk = pipeline/<stage>/ (run as python -m) = tests/test_<stage>.py."""
    rules = {p.stem for p in (REPO / "workflow" / "rules").glob("*.smk")} - {"common"}
    assert rules == set(STAGES)
    for stage in STAGES:
        assert (PACKAGE_DIR / stage / "__init__.py").is_file() and (PACKAGE_DIR / stage / "__main__.py").is_file(), stage
        assert (REPO / "tests" / f"test_{stage}.py").is_file(), stage
        assert f"pipeline.{stage}" in (REPO / "workflow" / "rules" / f"{stage}.smk").read_text(), stage
        assert module_file(f"pipeline.{stage}") in stage_sources(f"pipeline.{stage}")


def test_a_stage_hash_covers_every_file_of_its_package(tmp_path, monkeypatch):
    """A file of the stage's package counts even when nothing imports it; a library file only when imported."""
    pkg = tmp_path / "pipeline"
    (pkg / "stage" / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "lib.py").write_text("X = 1\n")
    (pkg / "unused_lib.py").write_text("Y = 1\n")
    (pkg / "stage" / "__init__.py").write_text("from pipeline.lib import X\n")
    (pkg / "stage" / "helper.py").write_text("Z = 2\n")
    (pkg / "stage" / "sub" / "__init__.py").write_text("")
    (pkg / "stage" / "sub" / "deep.py").write_text("W = 3\n")
    monkeypatch.setattr(provenance, "PACKAGE_DIR", pkg)
    found = {str(p.relative_to(pkg)) for p in provenance.stage_sources("pipeline.stage")}
    assert found == {"__init__.py", "lib.py", "stage/__init__.py", "stage/helper.py", "stage/sub/__init__.py", "stage/sub/deep.py"}


def test_augmentation_is_not_in_the_embed_or_decode_hash():
    """The config layer every stage imports must not drag torch code (augment) into every hash."""
    for stage in ("embed", "decode"):
        deps = names(f"pipeline.{stage}")
        assert {"config/__init__.py", "config/build.py", "config/attacks.py"} <= deps and "augment.py" not in deps
    assert "augment.py" in names("pipeline.pretrain")


def test_report_hash_covers_the_grid_but_not_the_dataset_readers():
    deps = names("pipeline.report")
    assert {"grid.py", "modalities.py", "report/plots.py", "report/claims.py", "report/statistics.py"} <= deps
    assert not any(d.startswith("datasets/") for d in deps)


def test_hash_ignores_comments_docstrings_and_layout_but_not_code(tmp_path):
    from pipeline.provenance import normalised_source

    base = '"""Module doc."""\n\n\ndef f(x):\n    """Doc."""\n    return x + 1  # why\n'
    variants_same = [
        base + "\n# trailing comment\n",
        base.replace("Module doc.", "Another module doc.").replace('"""Doc."""', '"""Other doc,\n    two lines."""'),
        base.replace("return x + 1", "return (x\n            + 1)"),
        base.replace('    """Doc."""\n', ""),
    ]
    variants_differ = [base.replace("x + 1", "x + 2"), base.replace("def f(x)", "def g(x)"), base + "y = 'doc'\n"]

    def norm(text: str) -> str:
        path = tmp_path / "m.py"
        path.write_text(text)
        return normalised_source(path)

    assert all(norm(v) == norm(base) for v in variants_same)
    assert all(norm(v) != norm(base) for v in variants_differ)


def test_function_with_only_a_docstring_still_parses_and_hashes(tmp_path):
    from pipeline.provenance import normalised_source

    path = tmp_path / "m.py"
    path.write_text('def f():\n    """Only a docstring."""\n')
    assert "Pass" in normalised_source(path)
