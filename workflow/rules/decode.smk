from pipeline.datasets import check_layout


def check_dataset_layouts():
    """A user dataset not decoded yet must be where its root says: fail before any job, naming it.

    Embedded datasets come from the embed rule; a decoded one no longer needs its raw files.
    """
    for ds in DATASETS:
        section = config["decode"][ds]
        embedded = section["root"].startswith(f"{RESULTS}/embed/")
        if section["source"] == "sklearn_digits" or embedded or os.path.exists(f"{decode_dir(ds)}/meta.json"):
            continue
        try:
            check_layout(section["source"], section["root"], section["fold"], section["download"])
        except FileNotFoundError as error:
            config_error(f"decode.{ds}.root", str(error))


check_dataset_layouts()


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
    threads: workflow.cores
    log:
        f"{RESULTS}/logs/decode/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/decode/{{dataset}}.tsv"
    shell:
        "{PYTHON:q} -m pipeline.warm pipeline.decode --cfg {params.cfg:q} --out {params.out:q} --threads {threads} > {log:q} 2>&1"
