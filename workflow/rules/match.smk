rule match:
    """The supervised pretraining snapshot whose SLF clean accuracy matches the CSL model's (claim C1c)."""
    input:
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
        arrays=decoded_arrays(),
        snapshots=matched_snapshots,
        target=matched_target,
    output:
        model=f"{RESULTS}/match/{{dataset}}/seed{{seed}}/classifier.pt",
        metrics=f"{RESULTS}/match/{{dataset}}/seed{{seed}}/metrics.json",
    log:
        f"{RESULTS}/logs/match/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/match/{{dataset}}/seed{{seed}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=match_cfg(),
        code=code_hash("match"),
        data=data_dir,
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.match --cfg {params.cfg:q} --seed {wildcards.seed} --data {params.data:q} "
        "--snapshots {input.snapshots:q} --target {input.target:q} --out-model {output.model:q} "
        "--out-metrics {output.metrics:q} --threads {threads} > {log:q} 2>&1"
