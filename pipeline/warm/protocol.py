"""The warm interpreter's wire protocol and settings: a 4-byte length, then JSON; fds ride on the length."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct

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


def _alive(pid: int) -> bool:
    """Whether process `pid` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
