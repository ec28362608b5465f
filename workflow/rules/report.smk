localrules:
    report,


rule report:
    """Tables (CSV, Markdown), the gap analysis, plots and the checks section."""
    input:
        **report_inputs(),
    output:
        markdown=report(f"{RESULTS}/report/report.md", caption="../report/tables.rst", category="Tables", labels={"file": "report.md"}),
        robustness=report(
            f"{RESULTS}/report/robustness.csv", caption="../report/tables.rst", category="Tables", labels={"file": "robustness.csv"}
        ),
        summary=report(f"{RESULTS}/report/summary.csv", caption="../report/tables.rst", category="Tables", labels={"file": "summary.csv"}),
        gap=report(f"{RESULTS}/report/gap.csv", caption="../report/gap.rst", category="Tables", labels={"file": "gap.csv"}),
        representation=report(
            f"{RESULTS}/report/representation.csv",
            caption="../report/tables.rst",
            category="Tables",
            labels={"file": "representation.csv"},
        ),
        cost=report(f"{RESULTS}/report/cost.csv", caption="../report/tables.rst", category="Tables", labels={"file": "cost.csv"}),
        claims=report(f"{RESULTS}/report/claims.csv", caption="../report/tables.rst", category="Tables", labels={"file": "claims.csv"}),
        training_checks=report(
            f"{RESULTS}/report/training.csv", caption="../report/tables.rst", category="Tables", labels={"file": "training.csv"}
        ),
        sensitivity=report(
            f"{RESULTS}/report/sensitivity.csv", caption="../report/mechanism.rst", category="Tables", labels={"file": "sensitivity.csv"}
        ),
        dose_response=report(
            f"{RESULTS}/report/dose_response.csv",
            caption="../report/mechanism.rst",
            category="Tables",
            labels={"file": "dose_response.csv"},
        ),
        chain_slopes=report(
            f"{RESULTS}/report/chain_slopes.csv", caption="../report/mechanism.rst", category="Tables", labels={"file": "chain_slopes.csv"}
        ),
        miner_grid=report(
            f"{RESULTS}/report/miner_grid.csv", caption="../report/mechanism.rst", category="Tables", labels={"file": "miner_grid.csv"}
        ),
        accuracy=report(
            expand(f"{RESULTS}/report/{{dataset}}_accuracy_vs_eps.png", dataset=DATASETS),
            caption="../report/accuracy.rst",
            category="Robustness",
        ),
        gap_plot=report(
            expand(f"{RESULTS}/report/{{dataset}}_gap_closed.png", dataset=DATASETS),
            caption="../report/gap.rst",
            category="Robustness",
        ),
        training=report(
            expand(f"{RESULTS}/report/{{dataset}}_training.png", dataset=DATASETS),
            caption="../report/training.rst",
            category="Training",
        ),
        corruptions=report(
            f"{RESULTS}/report/corruptions.csv", caption="../report/tables.rst", category="Tables", labels={"file": "corruptions.csv"}
        ),
        corruption_plot=report(
            expand(f"{RESULTS}/report/{{dataset}}_corruptions.png", dataset=DATASETS),
            caption="../report/corruptions.rst",
            category="Robustness",
        ),
        uniformity=report(
            expand(f"{RESULTS}/report/{{dataset}}_uniformity.png", dataset=DATASETS),
            caption="../report/uniformity.rst",
            category="Representation",
        ),
        heatmaps=report(
            expand(f"{RESULTS}/report/{{dataset}}_heatmaps.png", dataset=DATASETS),
            caption="../report/heatmaps.rst",
            category="Representation",
        ),
        mechanism_plot=report(
            expand(f"{RESULTS}/report/{{dataset}}_mechanism.png", dataset=DATASETS if GRID.mechanism else []),
            caption="../report/mechanism.rst",
            category="Mechanism",
        ),
        miner_grid_plot=report(
            expand(f"{RESULTS}/report/{{dataset}}_miner_grid.png", dataset=DATASETS if GRID.mechanism else []),
            caption="../report/mechanism.rst",
            category="Mechanism",
        ),
    log:
        f"{RESULTS}/logs/report/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report/report.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        cfg=section_cfg("report"),
        grid=GRID.to_json(),
        code=code_hash("report"),
        out=output_dir("markdown"),
        results=results_root,
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.report --cfg {params.cfg:q} --grid {params.grid:q} --results {params.results:q} "
        "--out {params.out:q} > {log:q} 2>&1"
