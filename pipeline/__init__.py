"""CSL adversarial-robustness study: one module or subpackage per Snakemake stage.

Importing this package must stay cheap (no torch): the Snakefile imports
`pipeline.provenance` to hash stage sources when it builds the DAG.
"""
