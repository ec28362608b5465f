"""A worker: a forked child of the server that becomes the job (fds, cwd, environment, limits, a fresh import)."""

from __future__ import annotations

import os
import signal
import socket
import sys

from pipeline.warm.client import apply_process_state
from pipeline.warm.protocol import (
    _POLL_S,
    _REQUEST_TIMEOUT_S,
    PROTOCOL,
    STARTUP_PREFIXES,
    THREAD_VARS,
    _alive,
    recv_message,
    send_message,
)


# ---- worker (a forked child of the server) -----------------------------------------------------
def startup_env(env: dict[str, str]) -> dict[str, str]:
    """The variables of `env` that a process reads only when it starts (see STARTUP_PREFIXES)."""
    return {k: v for k, v in env.items() if k.startswith(STARTUP_PREFIXES) and k not in THREAD_VARS}


def refusal(request: dict, server_env: dict[str, str]) -> str | None:
    """Why this server cannot run `request` as a fresh process would (None: it can)."""
    if request.get("protocol") != PROTOCOL:
        return f"client protocol {request.get('protocol')} != server protocol {PROTOCOL}"
    wanted, have = startup_env(request["env"]), startup_env(server_env)
    differ = sorted(k for k in wanted.keys() | have.keys() if wanted.get(k) != have.get(k))
    if differ:
        return f"start-up variables differ from the server's: {', '.join(differ)}"
    return None


def _thread_count(env: dict[str, str], names: tuple[str, ...]) -> int:
    """The first valid positive count among `names` in `env`, else the CPUs this process may use."""
    for name in names:
        try:
            value = int(env.get(name, ""))
        except ValueError:
            continue
        if value > 0:
            return value
    return len(os.sched_getaffinity(0))


def _rebind_stdio(fds: list[int]) -> None:
    """Put the client's fds on 0/1/2 and new sys.std* over them, buffered as Python's own."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
            os.close(fd)
    encoding, unbuffered = sys.stdout.encoding, sys.stdout.write_through  # -u / PYTHONUNBUFFERED
    sys.stdin = sys.__stdin__ = open(0, encoding=encoding, closefd=False)
    sys.stdout = sys.__stdout__ = open(1, "w", encoding=encoding, errors=sys.stdout.errors, closefd=False)
    sys.stdout.reconfigure(line_buffering=os.isatty(1), write_through=unbuffered)
    sys.stderr = sys.__stderr__ = open(2, "w", encoding=encoding, errors="backslashreplace", closefd=False)
    sys.stderr.reconfigure(line_buffering=True, write_through=unbuffered)


def _become_job(request: dict, fds: list[int], server_env: dict[str, str]) -> None:
    """Turn this fork of the server into the fresh `python -m module` process the client asked for."""
    import importlib
    import tempfile

    os.umask(request["umask"])
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _rebind_stdio(fds)
    sys.argv = [request["module"], *request["args"]]
    sys.path[0] = os.getcwd()  # what `python -m` puts first
    for name in [m for m in sys.modules if m == "pipeline" or m.startswith("pipeline.")]:
        del sys.modules[name]  # the job's own checkout, edited or not since the server started
    importlib.invalidate_caches()
    tempfile.tempdir = None  # recomputed from this job's TMPDIR
    _fresh_process_state(request["env"], server_env)


def _fresh_process_state(env: dict[str, str], server_env: dict[str, str]) -> None:
    """Redraw what a fork inherits but a fresh process would draw itself; size thread pools."""
    import multiprocessing

    import numpy as np
    import threadpoolctl
    import torch

    np.random.seed()  # from OS entropy, as numpy does on import
    torch.default_generator.seed()  # torch draws its CPU seed at start-up too (CUDA's at CUDA init)
    multiprocessing.current_process().authkey = os.urandom(32)
    threadpoolctl.threadpool_limits(_thread_count(env, ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")),
                                    user_api="blas")
    # torch fixes its intra-op count from MKL_NUM_THREADS, else OMP_NUM_THREADS, at import
    # (measured: a fork keeps the server's); the server's count is right when they match.
    torch_vars = ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
    if any(env.get(k) != server_env.get(k) for k in torch_vars):
        torch.set_num_threads(_thread_count(env, torch_vars))


def _watch_client(conn: socket.socket, client_pid: int, finished: object) -> None:
    """Kill this worker's process group once the client is gone (its socket end closed or pid gone).

    A job killed with SIGKILL cannot pass the signal on; without this its worker would run on.
    `finished` (a threading.Event) is set once the job is done and its code about to be sent.
    """
    import select

    poller = select.poll()
    poller.register(conn, select.POLLIN | select.POLLHUP)
    while not finished.is_set():
        events = poller.poll(_POLL_S * 1000)
        try:  # the client never writes after its request: readable means closed
            gone = bool(events) and not conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            gone = False
        except OSError:
            gone = True
        gone = gone or not _alive(client_pid)
        if gone and not finished.is_set():
            os.killpg(0, signal.SIGKILL)


def _run_module(module: str) -> int:
    """`python -m module` in this process: its exit code, the traceback printed on failure."""
    import runpy
    import traceback

    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = _exit_code(stop.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # the job's failure, reported as the interpreter would
        traceback.print_exc()
        code = 1
    return code


def _exit_code(code: object) -> int:
    """The process exit status for `sys.exit(code)`: None is 0, an int itself, else printed and 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _shutdown() -> None:
    """What interpreter exit does before the process ends: join threads, run atexit, flush."""
    import atexit
    import threading

    try:
        threading._shutdown()  # non-daemon threads of the job, as Py_Finalize waits for them
    except Exception:
        pass
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def _usage() -> dict[str, float]:
    """CPU seconds (user+sys) and peak RSS (MiB) of this worker and the children it waited for."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return {"cpu_s": cpu, "max_rss_mb": max(own.ru_maxrss, children.ru_maxrss) / 1024}  # ru_maxrss in KiB


def worker_main(conn: socket.socket, server_env: dict[str, str]) -> None:
    """The forked child: read the request, become the job, run it, report; never returns."""
    code = 1
    try:
        os.setsid()  # its own session and process group: the client signals the whole tree
        try:
            send_message(conn, {"hello": os.getpid()})  # the client sends its request only to a live worker
        except OSError:
            os._exit(0)  # a caller that connected and left at once (`start`'s readiness probe)
        conn.settimeout(_REQUEST_TIMEOUT_S)
        request, fds = recv_message(conn, maxfds=3)
        conn.settimeout(None)
        if request is None or len(fds) != 3:
            os._exit(1)
        reason = refusal(request, server_env) or apply_process_state(request["process"])
        if reason:
            send_message(conn, {"refuse": reason})
            os._exit(0)
        send_message(conn, {"pid": os.getpid()})
        _become_job(request, fds, server_env)
        import threading

        finished = threading.Event()
        threading.Thread(target=_watch_client, args=(conn, request["pid"], finished), daemon=True,
                         name="warm-watchdog").start()
        code = _run_module(request["module"])
        _shutdown()
        finished.set()
        send_message(conn, {"code": code, **_usage()})
    except BaseException:  # the worker's own machinery failed: say so in the job's log
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)
