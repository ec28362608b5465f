"""CSL adversarial-robustness study: one package per Snakemake stage, shared libraries, and tools.

Stages (each `pipeline/<stage>/` = `workflow/rules/<stage>.smk` = the `<stage>:` config section
= `tests/test_<stage>.py`, run as `python -m pipeline.<stage>`; its code hash covers the whole
package and the libraries it imports, `pipeline.provenance`):
  embed, decode, pretrain, mine, finetune (the adversarial protocols in `finetune/adversarial`),
  match, evaluate, analyse, report (claims, statistics, power, mechanism, training checks, plots).

Libraries the stages share: models (backbones, classifier heads, dual BN), losses, attacks,
corruptions, datasets (the real formats' readers and writers), data, augment, linf_pgd (the one
Linf PGD), sensitivity, optim, health, config (the typed config: a class per section, per evaluation
attack in `config/attacks`, built and written back by `config/build`), budget (the Linf budget
type with its one key and display format), grid,
validation, errors, io, logs, runtime, environment, distributed, modalities, provenance.

Tools, no stage: plan (the cost forecast), warm (the warm interpreter jobs run through), compare
and replication (two runs side by side), readme_results (the README's generated results),
terminal (the compact progress lines).

Importing this package must stay cheap (no torch): the Snakefile imports
`pipeline.provenance` to hash stage sources when it builds the DAG.
"""
