rule analyse:
    """Representation statistics (alignment, uniformity, class distances, margins) of a dataset's encoders."""
    input:
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
        arrays=decoded_arrays(),
        encoders=dataset_encoders,
    output:
        stats=f"{RESULTS}/analyse/{{dataset}}/representation.json",
    log:
        f"{RESULTS}/logs/analyse/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/analyse/{{dataset}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=section_cfg("analyse"),
        code=code_hash("analyse"),
        data=data_dir,
        encoders=encoder_args,
        bn_branch=config["finetune"]["dual_bn_branch"],  # dual-BN encoders: the branch the classifiers use
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.analyse --cfg {params.cfg:q} --data {params.data:q} {params.encoders} "
        "--bn-branch {params.bn_branch} --out-json {output.stats:q} --threads {threads} > {log:q} 2>&1"
