"""The server (one per local run) and the Snakemake glue that starts and stops it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from pipeline.warm.client import connect, peer_uid, server_path, socket_address
from pipeline.warm.protocol import _POLL_S, ENV_SOCKET, ENV_SWITCH, PRELOAD, _alive, send_message
from pipeline.warm.worker import worker_main


# ---- server ------------------------------------------------------------------------------------
def preload() -> None:
    """Import the heavy libraries once, without starting a thread pool or CUDA.

    OpenBLAS starts its threads when numpy loads; one thread here keeps the server a single
    thread (fork copies only the calling thread) and each worker sizes its own pool.
    """
    import importlib

    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        for name in PRELOAD:
            importlib.import_module(name)
        import threadpoolctl  # noqa: F401  (used by every worker)
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


def fork_hazards() -> list[str]:
    """Why forking this process would be unsafe (empty: safe): extra threads, a CUDA driver."""
    hazards = []
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        hazards.append(f"{threads} threads after the imports")
    with open("/proc/self/maps") as maps:
        if "libcuda.so" in maps.read():
            hazards.append("the CUDA driver is loaded")
    return hazards


def _reap(workers: dict[int, socket.socket]) -> None:
    """Collect finished workers; tell the client of one killed by a signal (OOM, SIGKILL)."""
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = workers.pop(pid, None)
        if conn is None:
            continue
        # A worker that reported its code has exited with it; one that did not (killed by a signal, or
        # the job called os._exit) gets its real status passed on, as a fresh process would give it.
        status_message = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
        try:
            conn.setblocking(False)
            send_message(conn, status_message)
        except OSError:
            pass  # the client is gone too, or has its answer already
        conn.close()


def serve(path: str, parent: int) -> int:
    """Preload, listen on `path`, fork a worker per connection until `parent` or SIGTERM ends us."""
    import select

    server_env = dict(os.environ)
    preload()
    hazards = fork_hazards()
    if hazards:
        print(f"warm: not serving, forking would be unsafe: {'; '.join(hazards)}", file=sys.stderr, flush=True)
        return 1
    # SIGTERM only sets a flag (an exception raised from a handler can land inside fork's
    # at-fork hooks, where Python drops it); the wake-up pipe ends the select at once.
    stopping: list[int] = []
    wake_r, wake_w = os.pipe()
    for fd in (wake_r, wake_w):
        os.set_blocking(fd, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the jobs; Snakemake stops us
    if os.path.exists(path):
        os.unlink(path)  # a stale socket of a killed server
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    workers: dict[int, socket.socket] = {}
    try:
        old_umask = os.umask(0o077)  # the socket is born 0600: no window between bind and chmod
        try:
            listener.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        listener.listen(64)
        print(f"warm: serving on {path} (pid {os.getpid()}, parent {parent})", file=sys.stderr, flush=True)
        while not stopping and _alive(parent):
            ready, _, _ = select.select([listener, wake_r], [], [], _POLL_S)
            if wake_r in ready:
                os.read(wake_r, 4096)
            if listener in ready and not stopping:
                conn, _ = listener.accept()
                if peer_uid(conn) != os.getuid():  # only this user's jobs; the directory is 0700 as well
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    for fd in (wake_r, wake_w):
                        os.close(fd)
                    listener.close()
                    for other in workers.values():
                        other.close()
                    worker_main(conn, server_env)
                workers[pid] = conn
            _reap(workers)
    finally:
        listener.close()  # (a worker never gets here: worker_main ends in os._exit)
        if os.path.exists(path):
            os.unlink(path)
        with contextlib.suppress(OSError):  # the private directory `start` made for it
            if os.path.basename(os.path.dirname(path)).startswith(SOCKET_DIR_PREFIX):
                os.rmdir(os.path.dirname(path))
    return 0


# ---- Snakemake glue (called from workflow/rules/common.smk) ------------------------------------
_server = None  # the subprocess.Popen of this Snakemake run's server


SOCKET_DIR_PREFIX = "pipeline-warm-"


def private_socket_path() -> str:
    """A socket path in a new private directory: mkdtemp makes it 0700, owned by us, with an unpredictable name.

    Under $XDG_RUNTIME_DIR (per user, 0700 itself) when it exists, else the system temp directory: both
    keep the path far below AF_UNIX's 108 bytes whatever the working directory, and no other local user
    can create the path first or reach the socket.
    """
    import tempfile

    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime_dir if runtime_dir and os.path.isdir(runtime_dir) and len(runtime_dir) < 60 else tempfile.gettempdir()
    return os.path.join(tempfile.mkdtemp(prefix=SOCKET_DIR_PREFIX, dir=base), "s.sock")


def start(python: str, workdir: str = ".", timeout_s: float = 60.0) -> str | None:
    """Start a server for this process's jobs; set PIPELINE_WARM_SOCKET; return its socket path.

    Waits up to `timeout_s` for it to accept (jobs started before that run fresh), so a slow
    import never fails the run. None when PIPELINE_WARM=0 or the server could not start.
    """
    import subprocess
    import time

    global _server
    if os.environ.get(ENV_SWITCH) == "0":
        return None
    path = private_socket_path()
    os.makedirs(os.path.join(os.path.abspath(workdir), ".snakemake"), exist_ok=True)
    log = open(os.path.join(os.path.abspath(workdir), ".snakemake", "warm.log"), "ab")
    _server = subprocess.Popen([python, "-m", "pipeline.warm", "serve", "--socket", path, "--parent", str(os.getpid())],
                               cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    log.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _server.poll() is None:
        sock = connect(path)
        if sock is not None:
            sock.close()  # the server's worker sees no request and exits
            break
        time.sleep(0.1)
    if _server.poll() is not None:
        print(f"warm: the server exited ({_server.returncode}); jobs run fresh. See .snakemake/warm.log",
              file=sys.stderr)
        _server = None
        _remove_socket_dir(path)
        return None
    os.environ[ENV_SOCKET] = socket_address(path)
    return path


def _remove_socket_dir(path: str) -> None:
    """The private directory of a server that is gone (it removes it itself unless killed)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def stop() -> None:
    """Stop this process's server (SIGTERM, then SIGKILL after 10 s) and unset the variable."""
    import subprocess

    global _server
    path = server_path(os.environ.pop(ENV_SOCKET, None))
    if _server is None:
        return
    _server.terminate()
    try:
        _server.wait(10)
    except subprocess.TimeoutExpired:
        _server.kill()
        _server.wait()
    _server = None
    if path and os.path.basename(os.path.dirname(path)).startswith(SOCKET_DIR_PREFIX):
        _remove_socket_dir(path)


def start_for_workflow(workflow: object, python: str) -> str | None:
    """`start` for a local, real run of the main Snakemake process (not dry/touch/cluster)."""
    if not (workflow.local_exec and workflow.is_main_process) or workflow.dryrun or workflow.touch:
        return None
    return start(python, os.getcwd())  # Snakemake has entered --directory by now
