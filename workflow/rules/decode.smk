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
    params:
        cfg=decode_cfg,
        code=code_hash("decode"),
        out=output_dir("meta"),
    threads: all_cores
    log:
        f"{RESULTS}/logs/decode/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/{{dataset}}.tsv"
    shell:
        "{PYTHON:q} -m pipeline.warm pipeline.decode --cfg {params.cfg:q} --out {params.out:q} --threads {threads} > {log:q} 2>&1"
