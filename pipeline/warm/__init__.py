"""A warm interpreter: jobs fork from one process that has imported torch once (a zygote).

Every Snakemake job is a fresh `python -m pipeline.<stage>`, and on the study machine a fresh
process spends ~3.5 s before the stage's own work starts: `import torch` (~2 s for the CUDA
build on a CPU machine) and `torch._dynamo`, which the first `Optimizer.step` imports
(~1.3 s). Over ~160 jobs on 2 cores that is minutes of the 10-minute budget.

    python -m pipeline.warm serve --socket PATH --parent PID    # the server (one per run)
    python -m pipeline.warm pipeline.<stage> ARGS...             # the client (every job)

The client imports nothing heavy (it starts in tens of ms). When PIPELINE_WARM_SOCKET
(`hostname:path`) names a server on this host, it sends its cwd, argv, environment, umask,
pid and its stdin/stdout/stderr file descriptors (SCM_RIGHTS). The server forks a worker,
which becomes the job: its own session, the client's cwd/environment/fds, a fresh import of
the stage module, `runpy` as `-m` would. The client forwards SIGTERM/SIGINT/SIGHUP to the
worker's process group, prints the worker's CPU time and peak RSS to stderr (Snakemake's
`benchmark:` measures the client's process tree, which no longer holds the work), and exits
with the worker's code. Without a server (no variable, another host, a dead socket, a server
that refuses) the client execs `python -m pipeline.<stage> ARGS...`, so the same command line
works by hand and on cluster nodes.

What a fork shares with its server and a fresh process would not, and how it is undone:
- the server never runs a torch op nor touches CUDA (no OpenMP pool, no CUDA context) and is
  single-threaded (it starts OpenBLAS with one thread); it refuses to start otherwise;
- torch's intra-op thread count is set from the job's MKL/OMP_NUM_THREADS where they differ
  from the server's, OpenBLAS's from OPENBLAS/GOTO/OMP_NUM_THREADS, as a fresh load would;
- torch's CPU seed, numpy's legacy global RNG and multiprocessing's authkey are redrawn
  (Python's `random` reseeds itself after fork; the stages seed themselves anyway);
- `tempfile`'s cached directory is dropped (Snakemake sets TMPDIR per job), the import caches
  are invalidated and every `pipeline` module is imported again from the job's sys.path;
- variables read once at interpreter or library start (PYTHON*, TORCH*, LD_*, locale, ...)
  cannot be changed in a fork: a job whose values differ from the server's runs fresh.
"""

from __future__ import annotations

# One namespace for the package's public names (`from pipeline import warm; warm.start(...)`).
from pipeline.logs import USAGE_LINE, worker_usage  # noqa: F401  (the report reads worker usage from logs.py)
from pipeline.warm.cli import main  # noqa: F401
from pipeline.warm.client import *  # noqa: F403
from pipeline.warm.protocol import *  # noqa: F403
from pipeline.warm.server import *  # noqa: F403
from pipeline.warm.worker import *  # noqa: F403
