rule finetune:
    """Train a classifier on a pretrained encoder under one protocol (slf, alf[_x] or aff[_x])."""
    input:
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
        arrays=decoded_arrays(),
        encoder=f"{RESULTS}/pretrain/{{dataset}}/{{method}}/seed{{seed}}/encoder.pt",
    output:
        model=f"{RESULTS}/finetune/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}/classifier.pt",
        metrics=f"{RESULTS}/finetune/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}/metrics.json",
    log:
        f"{RESULTS}/logs/finetune/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/finetune/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=finetune_cfg,
        code=code_hash("finetune"),
        data=data_dir,
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.finetune --cfg {params.cfg:q} --protocol {wildcards.protocol} --seed {wildcards.seed} "
        "--data {params.data:q} --encoder {input.encoder:q} --out-model {output.model:q} "
        "--out-metrics {output.metrics:q} --threads {threads} > {log:q} 2>&1"
