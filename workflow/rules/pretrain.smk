rule pretrain:
    """Pretrain one encoder per (dataset, method, seed); resumes from its checkpoint after a kill."""
    input:
        unpack(pretrain_inputs),
        arrays=decoded_arrays(),
    output:
        encoder=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/encoder.pt",
        metrics=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/metrics.json",
        snapshots=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/snapshots.pt",  # next to the encoder; empty unless `snapshots`
    log:
        f"{RESULTS}/logs/pretrain/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=pretrain_cfg,
        code=code_hash("pretrain"),
        data=data_dir,
        mined=mined_arg,
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.pretrain --cfg {params.cfg:q} --seed {wildcards.seed} --data {params.data:q} "
        "{params.mined} --out-encoder {output.encoder:q} --out-metrics {output.metrics:q} --threads {threads} > {log:q} 2>&1"
