"""CPU throughput anchors of the embedded studies' backbones, for `pipeline.plan --device cpu`.

Times forward + backward (input and weight gradients, as in training and attacks) of the small
backbones at the embedded studies' sizes, fp32, on ONE thread (every study job runs with
`threads: 1`), fastest of several rounds so that a busy machine disturbs the figure as little
as possible. Prints samples/s per backbone; pipeline/plan/anchors.py's CPU_ANCHORS holds the figures
of the machine named in benchmarks/RESULTS.md.

    python benchmarks/cpu_anchors.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.environment import cpu_model  # noqa: E402
from pipeline.models import Encoder  # noqa: E402

# (backbone, width, input shape of one sample, batch): the embedded studies' digits and clips (width 8) and
# the tiny test study's (.test/config.yaml, width 4).
CASES = [("resnet_small", 8, (3, 16, 16), 128), ("r3d_small", 8, (3, 8, 16, 16), 32),
         ("resnet_small", 4, (3, 16, 16), 128), ("r3d_small", 4, (3, 8, 16, 16), 32)]


def samples_per_second(backbone: str, width: int, shape: tuple, batch: int, rounds: int) -> float:
    """Forward + backward samples/s of the encoder, fastest of `rounds` rounds of 5 batches."""
    torch.manual_seed(0)
    encoder = Encoder(backbone, width, True, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    x = torch.rand(batch, *shape, requires_grad=True)
    best = float("inf")
    for _ in range(rounds + 1):  # the first round warms up
        start = time.perf_counter()
        for _ in range(5):
            encoder.zero_grad(set_to_none=True)
            encoder(x).square().sum().backward()
        best = min(best, time.perf_counter() - start)
    return 5 * batch / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rates = {f"{b} width {w}": round(samples_per_second(b, w, s, n, args.rounds), 1) for b, w, s, n in CASES}
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "threads": 1, "samples_per_s": rates}, indent=1))


if __name__ == "__main__":
    main()
