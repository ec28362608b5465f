"""`python -m pipeline.warm`: `serve`, or run a module through the client."""

from __future__ import annotations

import os
import sys

from pipeline.warm.client import run_client
from pipeline.warm.server import serve

# ---- command line ------------------------------------------------------------------------------
USAGE = """usage: python -m pipeline.warm MODULE [ARGS...]       run `python -m MODULE ARGS` (warm if a server is up)
       python -m pipeline.warm serve --socket PATH --parent PID"""


def _serve_cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.warm serve")
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    parser.add_argument("--parent", type=int, required=True, help="exit once this process (Snakemake) is gone")
    args = parser.parse_args(argv)
    code = serve(args.socket, args.parent)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip finalising a torch-loaded interpreter (seconds): nothing is left to clean up


def main(argv: list[str] | None = None) -> int:
    """Dispatch `serve` or run a module through the client."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    if argv[0] == "serve":
        return _serve_cli(argv[1:])
    return run_client(argv[0], argv[1:])
