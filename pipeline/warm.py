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

import contextlib
import json
import os
import signal
import socket
import struct
import sys

# 2: the worker greets first, the client sends its request (and stdio) only to a live worker;
# 3: the request carries the client's limits, niceness and CPU affinity
PROTOCOL = 3
ENV_SOCKET = "PIPELINE_WARM_SOCKET"  # "hostname:path" of the server this run started
ENV_SWITCH = "PIPELINE_WARM"  # "0" turns the server off (the Snakefile starts none)
PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.optim")
# Read once when the interpreter or a library starts: a worker cannot take another value.
STARTUP_PREFIXES = ("PYTHON", "TORCH", "PYTORCH", "CUDA", "NVIDIA", "LD_", "GLIBC_", "MALLOC_", "KMP_", "OMP_",
                    "MKL_", "OPENBLAS_", "GOTO", "LC_", "LANG")
# ...except the thread counts Snakemake sets per job (snakemake/shell.py), which the worker applies.
THREAD_VARS = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")  # byte length of the JSON message that follows
_REQUEST_TIMEOUT_S = 30.0  # a client that connects but sends nothing does not hold a worker
ENV_TIMEOUT = "PIPELINE_WARM_TIMEOUT"  # seconds a client waits for the server's first answer before running fresh
_FIRST_ANSWER_S = 10.0  # its default: a stopped or wedged server must not hang every job
_POLL_S = 1.0  # how often the server checks its parent and the worker its client


# ---- messages: a 4-byte length, then JSON; fds ride on the length -----------------------------
def send_message(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    """Send one JSON message; `fds` (SCM_RIGHTS) travel with its length header."""
    payload = json.dumps(message).encode()
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
    else:
        sock.sendall(header)
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int, head: bytes = b"") -> bytes | None:
    """Read until `size` bytes (including `head`); None at end of stream."""
    data = bytearray(head)
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def recv_message(sock: socket.socket, maxfds: int = 0) -> tuple[dict | None, list[int]]:
    """Receive one message and up to `maxfds` fds; (None, []) when the peer has closed."""
    fds: list[int] = []
    if maxfds:
        head, fds, flags, _ = socket.recv_fds(sock, _HEADER.size, maxfds)
        if flags & socket.MSG_CTRUNC:
            raise OSError("warm: file descriptors truncated in transit")
    else:
        head = sock.recv(_HEADER.size)
    header = _recv_exact(sock, _HEADER.size, head) if head else None
    if header is None:
        return None, fds
    payload = _recv_exact(sock, _HEADER.unpack(header)[0])
    return (json.loads(payload) if payload is not None else None), fds


# ---- client ------------------------------------------------------------------------------------
def socket_address(path: str) -> str:
    """The PIPELINE_WARM_SOCKET value for a server listening on `path` on this host."""
    return f"{socket.gethostname()}:{os.path.abspath(path)}"


def server_path(value: str | None) -> str | None:
    """The socket path in a PIPELINE_WARM_SOCKET value, if it names this host (else None)."""
    if not value or ":" not in value:
        return None
    host, path = value.split(":", 1)
    return path if host == socket.gethostname() and path else None


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED: pid, uid, gid)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


def connect(path: str, uid: int | None = None) -> socket.socket | None:
    """A connection to the server at `path`, or None (no socket file, nobody listening, or a listener that is
    not ours: another user's process is never sent a job, its environment or its file descriptors)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        owner = peer_uid(sock)
    except OSError:
        sock.close()
        return None
    if owner != (os.getuid() if uid is None else uid):
        print(f"warm: the socket {path} is served by uid {owner}, not this user: running fresh", file=sys.stderr, flush=True)
        sock.close()
        return None
    return sock


def exec_fresh(module: str, args: list[str]) -> None:
    """Replace this process with `python -m module args` (never returns)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


def _stdio_fds() -> list[int]:
    """fds 0, 1, 2 to hand over; a closed one is replaced by /dev/null (as Python does)."""
    fds = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            fds.append(os.open(os.devnull, os.O_RDWR))
    return fds


# Resource limits a job's shell may set (`ulimit -v`, `-t`, `-f`, `-n`, `-d`): the worker takes the client's.
LIMITS = ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE")


def process_state() -> dict:
    """This process's resource limits, niceness and CPU affinity: what `nice`, `taskset` and `ulimit` set."""
    import resource

    return {"limits": {name: list(resource.getrlimit(getattr(resource, name))) for name in LIMITS},
            "nice": os.getpriority(os.PRIO_PROCESS, 0), "affinity": sorted(os.sched_getaffinity(0))}


def apply_process_state(state: dict) -> str | None:
    """Take on a client's limits, niceness and affinity; why not (None: done). A worker cannot raise a hard
    limit above the server's or lower its niceness without privileges: the job then runs fresh instead."""
    import resource

    memory = [name for name in ("RLIMIT_AS", "RLIMIT_DATA") if state["limits"][name][0] != resource.RLIM_INFINITY]
    if memory:  # the fork carries the server's torch-sized address space: only a fresh process honours such a limit
        return f"a memory limit is set ({', '.join(memory)}, e.g. `ulimit -v`)"
    try:
        for name, (soft, hard) in state["limits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.setpriority(os.PRIO_PROCESS, 0, state["nice"])
        os.sched_setaffinity(0, state["affinity"])
    except (OSError, ValueError) as error:
        return f"cannot take on the job's limits, niceness or CPU affinity ({error})"
    return None


def _request(module: str, args: list[str]) -> dict:
    """What the worker needs to become this process: cwd, argv, environment, umask, limits, pid."""
    umask = os.umask(0)
    os.umask(umask)
    return {"protocol": PROTOCOL, "module": module, "args": args, "cwd": os.getcwd(), "env": dict(os.environ),
            "umask": umask, "pid": os.getpid(), "process": process_state()}


class _Forwarder:
    """Signal handlers that pass SIGTERM/SIGINT/SIGHUP on to the worker's process group, and job control.

    The worker leads a session of its own, so the terminal's Ctrl-Z (SIGTSTP) and the shell's
    `fg` / `bg` (SIGCONT) reach only the client: it stops the worker's group and then itself, and
    on SIGCONT it resumes the worker, so the job stops and resumes as a fresh process would.
    """

    def __init__(self) -> None:
        self.worker: int | None = None
        self.pending: list[int] = []  # signals that came before the worker's pid
        self.forwarded: int | None = None
        for signum in FORWARDED:
            signal.signal(signum, self.handle)
        signal.signal(signal.SIGTSTP, self.stop)
        signal.signal(signal.SIGCONT, self.resume)

    def stop(self, signum: int, frame: object) -> None:
        if self.worker is not None:
            self._signal_worker(signal.SIGSTOP)  # SIGSTOP: the job cannot ignore it, as a fresh process would not the tty's
        os.kill(os.getpid(), signal.SIGSTOP)  # then the client, so the shell sees the job stopped

    def resume(self, signum: int, frame: object) -> None:
        if self.worker is not None:
            self._signal_worker(signal.SIGCONT)

    def handle(self, signum: int, frame: object) -> None:
        if self.worker is None:
            self.pending.append(signum)
        else:
            self.send(signum)

    def attach(self, pid: int) -> None:
        self.worker = pid
        for signum in self.pending:
            self.send(signum)

    def send(self, signum: int) -> None:
        self.forwarded = signum
        self._signal_worker(signum)

    def _signal_worker(self, signum: int) -> None:
        try:
            os.killpg(self.worker, signum)  # the worker leads its own session, like a job's group
        except OSError:
            try:
                os.kill(self.worker, signum)
            except OSError:
                pass


USAGE_LINE = "warm: worker cpu_s="  # how the usage line that `_finish` prints begins


def worker_usage(log_text: str) -> dict[str, float] | None:
    """{"cpu_s", "max_rss_mb"} from the last `warm: worker ...` line of a job's log (None: ran fresh).

    For the report's cost table: with the warm interpreter Snakemake's benchmark CPU and RSS
    columns measure only the client; these are the worker's (wall time is the same either way).
    """
    lines = [line for line in log_text.splitlines() if line.startswith(USAGE_LINE)]
    if not lines:
        return None
    fields = dict(item.split("=", 1) for item in lines[-1].split()[2:] if "=" in item)
    return {"cpu_s": float(fields["cpu_s"]), "max_rss_mb": float(fields["max_rss_mb"])}


def _finish(result: dict | None, forwarder: _Forwarder) -> int:
    """The client's exit code for the worker's last message (None: no message at all)."""
    if result is not None and "code" in result:
        print(f"{USAGE_LINE}{result['cpu_s']:.2f} max_rss_mb={result['max_rss_mb']:.1f} "
              f"pid={forwarder.worker}", file=sys.stderr, flush=True)
        return int(result["code"])
    if result is not None and "exit" in result:  # the job ended the process itself (os._exit): its status, as fresh
        return int(result["exit"])
    if forwarder.forwarded is not None:
        # Killed by the signal we passed on: end the same way, as a fresh process would have.
        signal.signal(forwarder.forwarded, signal.SIG_DFL)
        os.kill(os.getpid(), forwarder.forwarded)
    if result is not None and "signal" in result:
        name = signal.Signals(result["signal"]).name
        why = " (the out-of-memory killer sends it too)" if result["signal"] == signal.SIGKILL else ""
        print(f"warm: worker {forwarder.worker} was killed by {name}{why}", file=sys.stderr, flush=True)
        return 128 + int(result["signal"])
    print(f"warm: worker {forwarder.worker} ended without an exit code", file=sys.stderr, flush=True)
    return 1


def run_client(module: str, args: list[str]) -> int:
    """Run `python -m module args` in a worker of this host's server, or fresh without one."""
    path = None if os.environ.get(ENV_SWITCH) == "0" else server_path(os.environ.get(ENV_SOCKET))
    sock = connect(path) if path else None
    if sock is None:
        exec_fresh(module, args)
    forwarder = _Forwarder()
    wait_s = float(os.environ.get(ENV_TIMEOUT) or _FIRST_ANSWER_S)
    try:
        # A stopped or wedged server (SIGSTOP) still completes the connection in the kernel but never
        # answers. The worker greets first, so the job's stdio descriptors are sent only to a live one
        # (descriptors in flight to a stopped server would hold the job's pipes open).
        sock.settimeout(wait_s)
        hello, _ = recv_message(sock)
        if hello is None or "hello" not in hello:
            raise OSError("no greeting")
        send_message(sock, _request(module, args), _stdio_fds())
        first, _ = recv_message(sock)
        sock.settimeout(None)
    except TimeoutError:
        print(f"warm: no answer from the server within {wait_s:g} s ({ENV_TIMEOUT}); running fresh", file=sys.stderr, flush=True)
        first = None
    except OSError:
        first = None
    if first is None or "refuse" in first:
        # The worker never started the job: nothing has run, so running fresh is safe.
        if first is not None:
            print(f"warm: running fresh ({first['refuse']})", file=sys.stderr, flush=True)
        sock.close()
        for signum in (*FORWARDED, signal.SIGTSTP, signal.SIGCONT):
            signal.signal(signum, signal.SIG_DFL)
        if forwarder.pending:
            os.kill(os.getpid(), forwarder.pending[0])
        exec_fresh(module, args)
    forwarder.attach(int(first["pid"]))
    result = None
    while True:
        try:
            message, _ = recv_message(sock)
        except OSError:
            message = None
        if message is None:
            break
        result = message
        if "code" in message or "signal" in message or "exit" in message:
            break
    sock.close()
    return _finish(result, forwarder)


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


def _alive(pid: int) -> bool:
    """Whether process `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


if __name__ == "__main__":
    sys.exit(main())
