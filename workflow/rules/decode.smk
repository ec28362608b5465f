rule decode:
    """Decode a dataset once into memory-mappable uint8 arrays plus meta.json."""
    input:
        decode_inputs,
    output:
        train_x=f"{RESULTS}/decode/{{dataset}}/train_x.npy",
        train_y=f"{RESULTS}/decode/{{dataset}}/train_y.npy",
        test_x=f"{RESULTS}/decode/{{dataset}}/test_x.npy",
        test_y=f"{RESULTS}/decode/{{dataset}}/test_y.npy",
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
    log:
        f"{RESULTS}/logs/decode/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/{{dataset}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: all_cores
    params:
        cfg=decode_cfg,
        code=code_hash("decode"),
        out=output_dir("meta"),
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.decode --cfg {params.cfg:q} --out {params.out:q} --threads {threads} > {log:q} 2>&1"
