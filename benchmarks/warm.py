"""Job start-up: a stage run through the warm interpreter against the same stage in a fresh process.

Runs the same command alternately both ways (`python -m pipeline.<stage> ...` with
PIPELINE_WARM=0 and through a server started here), and prints wall and CPU seconds of each
and the ratio fresh / warm. The default command is a real job of the tiny study's kind: an
SLF fine-tune of a small encoder on the embedded digits (pretrained here once, not timed).

    python benchmarks/warm.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def prepare(tmp: Path) -> list[str]:
    """Decode the digits and pretrain a tiny encoder once; returns the finetune job's arguments."""
    from pipeline.config import DecodeConfig, PretrainConfig, from_dict
    from pipeline.decode import run as decode
    from pipeline.pretrain import run as pretrain
    from tests.conftest import decode_cfg, pretrain_cfg, schema_defaults

    decode(from_dict(DecodeConfig, decode_cfg()), tmp / "digits", threads=1)
    cfg = pretrain_cfg({"loss": "nt_xent"}, {"epochs": 1})
    pretrain(from_dict(PretrainConfig, cfg), json.dumps(cfg), 0, tmp / "digits", None, tmp / "enc" / "encoder.pt",
             tmp / "enc" / "metrics.json")
    finetune = schema_defaults("finetune", {"device": "cpu", "epochs": 20, "protocols": {"slf": {}}})
    return ["pipeline.finetune", "--cfg", json.dumps(finetune), "--protocol", "slf", "--seed", "0", "--data", str(tmp / "digits"),
            "--encoder", str(tmp / "enc" / "encoder.pt"), "--out-model", str(tmp / "c.pt"), "--out-metrics", str(tmp / "m.json")]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the command and, warm, of its worker as reported on its log line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    from pipeline.warm import worker_usage

    usage = worker_usage(proc.stderr)
    return wall, cpu + (usage["cpu_s"] if usage else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from pipeline import warm

    with tempfile.TemporaryDirectory() as tmp:
        job = prepare(Path(tmp))
        fresh_env = {**os.environ, "PIPELINE_WARM": "0"}
        socket_path = warm.start(sys.executable, tmp)
        if socket_path is None:
            sys.exit("benchmarks/warm.py: the warm server did not start (see .snakemake/warm.log)")
        warm_env = dict(os.environ)
        runs: dict[str, list[tuple[float, float]]] = {"fresh": [], "warm": []}
        try:
            for _ in range(args.repeats):  # alternated, so load drifts hit both alike
                runs["fresh"].append(timed([sys.executable, "-m", *job], fresh_env))
                runs["warm"].append(timed([sys.executable, "-m", "pipeline.warm", *job], warm_env))
        finally:
            warm.stop()
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
    for k, (w, c) in med.items():
        print(f"{k:5s}: wall {w:6.2f} s, CPU {c:6.2f} s (median of {args.repeats})")
    print(f"fresh / warm: wall {med['fresh'][0] / med['warm'][0]:.2f}x, CPU {med['fresh'][1] / med['warm'][1]:.2f}x; "
          f"saved per job: {med['fresh'][1] - med['warm'][1]:.2f} CPU-s")


if __name__ == "__main__":
    main()
