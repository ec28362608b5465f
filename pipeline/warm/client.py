"""The client every job runs: hand the job to this host's server, or exec a fresh interpreter."""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys

from pipeline.logs import USAGE_LINE
from pipeline.warm.protocol import _FIRST_ANSWER_S, ENV_SOCKET, ENV_SWITCH, ENV_TIMEOUT, FORWARDED, PROTOCOL, recv_message, send_message


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
