rule pretrain:
    """Pretrain one encoder per (dataset, method, seed); resumes from its checkpoint after a kill."""
    input:
        unpack(pretrain_inputs),
        arrays=decoded_arrays(),
    output:
        encoder=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/encoder.pt",
        metrics=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/metrics.json",
        snapshots=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/snapshots.pt",  # next to the encoder; empty unless `snapshots`
    params:
        cfg=pretrain_cfg,
        code=code_hash("pretrain"),
        data=data_dir,
        mined=mined_arg,
    threads: 1
    log:
        f"{RESULTS}/logs/pretrain/{{dataset}}/{{method}}/seed{{seed}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain/{{dataset}}/{{method}}/seed{{seed}}.tsv"
    shell:
        "{PYTHON:q} -m pipeline.warm pipeline.pretrain --cfg {params.cfg:q} --seed {wildcards.seed} --data {params.data:q} "
        "{params.mined} --out-encoder {output.encoder:q} --out-metrics {output.metrics:q} --threads {threads} > {log:q} 2>&1"
