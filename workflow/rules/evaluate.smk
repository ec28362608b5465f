rule evaluate:
    """Clean, adversarial (attack cascade per eps) and corruption accuracy of one classifier on the test split.

    One robustness.json per classifier. A killed job resumes from the per-unit results the stage keeps in
    `.robustness.json.partial/` next to the output (removed when the job succeeds).
    """
    input:
        meta=f"{RESULTS}/decode/{{dataset}}/meta.json",
        arrays=decoded_arrays(["test"]),
        model=classifier_input,
    output:
        f"{RESULTS}/evaluate/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}/robustness.json",
    log:
        f"{RESULTS}/logs/evaluate/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{dataset}}/{{method}}/seed{{seed}}/{{protocol}}.tsv"
    conda:
        "../envs/pipeline.yaml"
    threads: 1
    params:
        cfg=evaluate_cfg,
        code=code_hash("evaluate"),
        data=data_dir,
    shell:
        "$PIPELINE_PYTHON -m pipeline.warm pipeline.evaluate --cfg {params.cfg:q} --seed {wildcards.seed} --data {params.data:q} "
        "--model {input.model:q} --out {output:q} --threads {threads} > {log:q} 2>&1"
