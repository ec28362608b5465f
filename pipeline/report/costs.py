"""The report's cost table: wall time, memory, CPU time and device per job, from Snakemake's benchmark files
(results/benchmarks/<rule>/...tsv) and the stages' metrics."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from pipeline import grid as grid_paths
from pipeline.grid import Grid
from pipeline.io import read_sealed
from pipeline.logs import worker_usage


def tsv_number(record: dict[str, str], key: str) -> float:
    """A number from a Snakemake benchmark row; NaN where Snakemake wrote NA or -."""
    value = record.get(key, "NA")
    return math.nan if value in ("NA", "-") else float(value)


def job_device(results: Path, stage: str, job: str) -> str:
    """The device a job ran on, from its own result file (Snakemake's benchmark does not know it)."""
    for name in ("metrics.json", "robustness.json", "quality.json"):
        path = results / stage / job / name
        if path.exists():
            return read_sealed(path, stage).get("runtime", {}).get("device", "cpu")
    return "cpu"


def cost_rows(results: Path, grid: Grid) -> list[dict]:
    """One row per job of the current grid from Snakemake's `benchmark:` files: wall time, max RSS, CPU
    time, device. Files left over from jobs of an older grid are not counted; the report job itself is
    still running, so it has no row."""
    rows = []
    for stage, job in sorted(((j.stage, j.name) for j in grid.jobs()), key=lambda j: grid_paths.benchmark_path(*j)):  # file order
        tsv = Path(grid_paths.benchmark_path(stage, job, results))
        if stage == "report" or not tsv.exists():
            continue
        # finetune: one line per protocol in the cost table (ALF/AFF cost far more than SLF)
        label = f"finetune_{Path(job).name}" if stage == "finetune" else stage
        header, *lines = tsv.read_text().splitlines()
        rec = dict(zip(header.split("\t"), lines[-1].split("\t"), strict=True))
        row = {"stage": label, "job": job, "seconds": tsv_number(rec, "s"), "max_rss_mb": tsv_number(rec, "max_rss"),
               "cpu_seconds": tsv_number(rec, "cpu_time"), "device": job_device(results, stage, job)}
        log = results / "logs" / stage / f"{job}.log"
        usage = worker_usage(log.read_text(errors="replace")) if log.exists() else None
        if usage is not None:  # a warm-interpreter job: the benchmark measured only its client process
            row.update(max_rss_mb=usage["max_rss_mb"], cpu_seconds=usage["cpu_s"])
        rows.append(row)
    return rows


def peak_gpu_memory(results: Path, grid: Grid) -> dict[str, float]:
    """Largest `peak_memory_mb` per stage over the grid's pretrain/finetune metrics (0 on CPU)."""
    peaks: dict[str, float] = defaultdict(float)
    for job in grid.jobs():
        if job.stage in ("pretrain", "finetune") and (path := Path(job.record(results))).exists():
            peaks[job.stage] = max(peaks[job.stage], float(read_sealed(path, job.stage).get("peak_memory_mb", 0.0)))
    return peaks
