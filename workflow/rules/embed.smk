rule embed:
    """Write an embedded synthetic video dataset as real H.264 files in the UCF101 layout."""
    output:
        directory(f"{RESULTS}/embed/{{name}}"),
    log:
        f"{RESULTS}/logs/embed/{{name}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{name}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    params:
        cfg=embed_cfg,
        code=code_hash("embed"),
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.embed --cfg {params.cfg:q} --out {output:q} > {log:q} 2>&1"
