rule mine:
    """Mine false-negative candidates from the warm-up encoder of the same dataset and seed."""
    input:
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
        arrays=decoded_arrays(["train"]),
        encoder=warmup_encoder,
    output:
        mined=f"{RESULTS}/mine/{{dataset}}/seed{{seed}}/false_negatives.npz",
        quality=f"{RESULTS}/mine/{{dataset}}/seed{{seed}}/quality.json",
    log:
        f"{RESULTS}/logs/mine/{{dataset}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/mine/{{dataset}}/seed{{seed}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=section_cfg("mine"),
        code=code_hash("mine"),
        data=data_dir,
        out=output_dir("quality"),
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.mine --cfg {params.cfg:q} --seed {wildcards.seed} --data {params.data:q} "
        "--encoder {input.encoder:q} --out {params.out:q} --threads {threads} > {log:q} 2>&1"
