"""The warm interpreter: a job run through the server behaves as the same `python -m` run fresh.

One server (it imports torch once, a few seconds) serves the module; the probes are tiny
modules of a package written into a temporary folder, found through the client's cwd as
`python -m` finds them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pipeline import warm
from tests.conftest import REPO

PROBES = {
    "__init__.py": "",
    # limits, niceness and CPU affinity as the job sees them; a 3 GiB allocation
    "limits.py": """
        import json, os, resource
        print(json.dumps({"nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0], "nice": os.getpriority(os.PRIO_PROCESS, 0),
                          "cpus": sorted(os.sched_getaffinity(0))}))
    """,
    "alloc.py": """
        block = bytearray(3 << 30)
        print("allocated", len(block))
    """,
    # a job that ends the process itself, skipping every handler
    "hard_exit.py": """
        import os
        os._exit(5)
    """,
    # stdin, argv, stdout, stderr and the exit code of a job
    "echo.py": """
        import json, os, sys
        data = sys.stdin.read()
        print("out", json.dumps(sys.argv[1:]), data.upper())
        print("err", os.environ.get("PROBE", "-"), file=sys.stderr)
        sys.exit(int(os.environ.get("PROBE_CODE", "0")))
    """,
    "fail.py": """
        raise ValueError("boom")
    """,
    # what a fresh process would draw or read itself
    "state.py": """
        import json, os, sys, tempfile
        preloaded = "torch" in sys.modules
        import numpy as np, threadpoolctl, torch
        blas = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        print(json.dumps({"preloaded": preloaded, "cwd": os.getcwd(), "path0": sys.path[0],
                          "argv0": sys.argv[0], "probe": os.environ.get("PROBE"), "tmp": tempfile.gettempdir(),
                          "torch_threads": torch.get_num_threads(), "blas_threads": blas,
                          "torch_seed": torch.initial_seed(), "np_draw": float(np.random.rand()),
                          "pid": os.getpid(), "pgid": os.getpgid(0), "pipeline": __import__("pipeline").__file__}))
    """,
    # a long job: writes its pid, then waits
    "sleep.py": """
        import os, sys, time
        with open(sys.argv[1], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(60)
    """,
    # each of two jobs waits for the other's file: only jobs running at once both finish
    "rendezvous.py": """
        import os, sys, time
        mine, other = sys.argv[1:3]
        open(mine, "w").close()
        deadline = time.monotonic() + 30
        while not os.path.exists(other):
            if time.monotonic() > deadline:
                sys.exit("the other job never ran alongside")
            time.sleep(0.05)
        print("met")
    """,
    # the decode stage's forkserver pool inside a job
    "pooled.py": """
        from pipeline.datasets.pool import KillablePool

        def square(x):
            return x * x

        if __name__ == "__main__":
            pool = KillablePool(workers=2, timeout_s=60)
            try:
                print(sorted((o.index, o.result) for o in pool.map(square, [(i,) for i in range(5)])))
            finally:
                pool.close()
    """,
}


def _server(socket_path: Path, parent: int, env: dict[str, str]) -> subprocess.Popen:
    """A server on `socket_path`, waited for until it accepts (the torch import takes seconds)."""
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.warm", "serve", "--socket", str(socket_path),
                             "--parent", str(parent)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        sock = warm.connect(str(socket_path))
        if sock is not None:
            sock.close()
            return proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the warm server did not start: {proc.communicate()[0]}")


@pytest.fixture(scope="module")
def probes(tmp_path_factory) -> Path:
    """A folder holding the `warmprobe` package; jobs run with it as cwd."""
    root = tmp_path_factory.mktemp("warm")
    (root / "warmprobe").mkdir()
    for name, source in PROBES.items():
        (root / "warmprobe" / name).write_text(textwrap.dedent(source))
    return root


@pytest.fixture(scope="module")
def base_env() -> dict[str, str]:
    """The environment of the server and of the jobs: this checkout's `pipeline` first."""
    env = {k: v for k, v in os.environ.items() if k not in (warm.ENV_SOCKET, warm.ENV_SWITCH)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def server(probes, base_env):
    """(socket path, environment for warm jobs) of a server living as long as this module's tests."""
    path = probes / "s.sock"
    proc = _server(path, os.getpid(), base_env)
    yield path, {**base_env, warm.ENV_SOCKET: warm.socket_address(str(path))}
    proc.terminate()
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert not path.exists(), "the server left its socket behind"


def run(probes: Path, env: dict[str, str], module: str, *args: str, warm_client: bool = True,
        stdin: str = "", **extra_env: str) -> subprocess.CompletedProcess:
    """`python [-m pipeline.warm] -m module args` in the probe folder."""
    cmd = [sys.executable, "-m", "pipeline.warm", module, *args] if warm_client else [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, cwd=probes, env={**env, **extra_env}, input=stdin, capture_output=True, text=True,
                          timeout=120)


def job_stderr(proc: subprocess.CompletedProcess) -> str:
    """The job's own stderr, without the client's `warm: worker` line."""
    return "".join(line for line in proc.stderr.splitlines(keepends=True) if not line.startswith("warm: worker"))


def state(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---- same job, same result -----------------------------------------------------------------------
@pytest.mark.parametrize("code", ["0", "3"])
def test_warm_job_gives_the_fresh_output_and_exit_code(server, probes, base_env, code):
    path, env = server
    hot = run(probes, env, "warmprobe.echo", "a b", "-x", stdin="hello\n", PROBE="p", PROBE_CODE=code)
    cold = run(probes, base_env, "warmprobe.echo", "a b", "-x", warm_client=False, stdin="hello\n", PROBE="p",
               PROBE_CODE=code)
    assert (hot.returncode, hot.stdout, job_stderr(hot)) == (cold.returncode, cold.stdout, cold.stderr)
    assert hot.returncode == int(code) and hot.stdout == 'out ["a b", "-x"] HELLO\n\n'
    assert hot.stderr.count("warm: worker cpu_s=") == 1, "the job did not run in a worker"


def test_exception_prints_its_traceback_and_exits_1(server, probes, base_env):
    path, env = server
    hot, cold = run(probes, env, "warmprobe.fail"), run(probes, base_env, "warmprobe.fail", warm_client=False)
    assert hot.returncode == cold.returncode == 1
    assert "ValueError: boom" in hot.stderr and "warmprobe/fail.py" in hot.stderr


def test_worker_reports_its_cpu_time_and_peak_memory(server, probes):
    path, env = server
    proc = run(probes, env, "warmprobe.echo")
    usage = warm.worker_usage("job output\n" + proc.stderr)
    assert usage["cpu_s"] > 0
    assert usage["max_rss_mb"] > 50, "a fork of a torch process holds well over 50 MiB"
    assert warm.worker_usage("a log of a job that ran fresh\n") is None


def test_worker_is_the_clients_process_not_the_servers(server, probes, base_env):
    path, env = server
    tmpdir = probes / "tmp"
    tmpdir.mkdir(exist_ok=True)
    hot = state(run(probes, env, "warmprobe.state", PROBE="job", TMPDIR=str(tmpdir)))
    cold = state(run(probes, base_env, "warmprobe.state", warm_client=False, PROBE="job", TMPDIR=str(tmpdir)))
    assert hot["preloaded"] and not cold["preloaded"]
    for key in ("cwd", "path0", "argv0", "probe", "tmp", "pipeline", "torch_threads", "blas_threads"):
        assert hot[key] == cold[key], key
    assert hot["path0"] == str(probes) and hot["tmp"] == str(tmpdir)
    assert hot["pgid"] == hot["pid"], "the worker leads its own process group"


def test_thread_counts_follow_the_jobs_variables(server, probes, base_env):
    path, env = server
    one = {name: "1" for name in warm.THREAD_VARS}
    hot = state(run(probes, env, "warmprobe.state", **one))
    cold = state(run(probes, base_env, "warmprobe.state", warm_client=False, **one))
    assert hot["torch_threads"] == cold["torch_threads"] == 1
    assert hot["blas_threads"] == cold["blas_threads"]


def test_workers_do_not_share_random_state(server, probes):
    path, env = server
    first, second = (state(run(probes, env, "warmprobe.state")) for _ in range(2))
    assert first["torch_seed"] != second["torch_seed"]
    assert first["np_draw"] != second["np_draw"]


def test_forkserver_pool_works_inside_a_worker(server, probes, base_env):
    path, env = server
    hot, cold = run(probes, env, "warmprobe.pooled"), run(probes, base_env, "warmprobe.pooled", warm_client=False)
    assert hot.returncode == 0, hot.stderr
    assert hot.stdout == cold.stdout == "[(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]\n"


def test_two_clients_run_at_once(server, probes):
    path, env = server
    a, b = probes / "meet_a", probes / "meet_b"
    cmd = [sys.executable, "-m", "pipeline.warm", "warmprobe.rendezvous"]
    procs = [subprocess.Popen([*cmd, str(x), str(y)], cwd=probes, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for x, y in ((a, b), (b, a))]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert all(out == "met\n" and "warm: worker" in err for out, err in outputs)


# ---- signals and deaths ------------------------------------------------------------------------------
def _sleeping_job(probes: Path, env: dict[str, str], name: str) -> tuple[subprocess.Popen, int]:
    """A client running warmprobe.sleep, and its worker's pid."""
    pidfile = probes / name
    client = subprocess.Popen([sys.executable, "-m", "pipeline.warm", "warmprobe.sleep", str(pidfile)], cwd=probes,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text(), 30), "the job never started"
    worker = int(pidfile.read_text())
    assert worker != client.pid
    return client, worker


def test_killed_client_takes_its_worker_with_it(server, probes):
    path, env = server
    client, worker = _sleeping_job(probes, env, "pid_killed_client")
    client.kill()
    client.wait()
    assert wait_for(lambda: not alive(worker), 10), "the worker outlived its client"


def test_sigterm_is_passed_on_and_the_client_dies_of_it(server, probes):
    path, env = server
    client, worker = _sleeping_job(probes, env, "pid_sigterm")
    client.terminate()
    assert client.wait(timeout=10) == -signal.SIGTERM
    assert wait_for(lambda: not alive(worker), 10)


def test_worker_killed_by_a_signal_fails_the_client(server, probes):
    path, env = server
    client, worker = _sleeping_job(probes, env, "pid_oom")
    os.kill(worker, signal.SIGKILL)  # what the OOM killer does
    _, err = client.communicate(timeout=10)
    assert client.returncode == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in err


# ---- no server: the same command runs fresh --------------------------------------------------------
def _fresh(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == 'out ["x"] \n' and "warm: worker" not in proc.stderr


def test_without_a_server_the_job_runs_fresh(probes, base_env):
    _fresh(run(probes, base_env, "warmprobe.echo", "x"))


def test_a_dead_socket_or_another_host_runs_fresh(probes, base_env):
    dead = probes / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(dead))  # a socket file nobody listens on, as a killed server leaves
    sock.close()
    _fresh(run(probes, base_env, "warmprobe.echo", "x", **{warm.ENV_SOCKET: warm.socket_address(str(dead))}))
    _fresh(run(probes, base_env, "warmprobe.echo", "x", **{warm.ENV_SOCKET: f"elsewhere-node-17:{dead}"}))


def test_pipeline_warm_0_bypasses_the_server(server, probes):
    path, env = server
    _fresh(run(probes, env, "warmprobe.echo", "x", **{warm.ENV_SWITCH: "0"}))


def test_a_different_start_up_variable_runs_fresh(server, probes):
    path, env = server
    proc = run(probes, env, "warmprobe.echo", "x", PYTHONHASHSEED="123")
    _fresh(proc)
    assert "warm: running fresh (start-up variables differ from the server's: PYTHONHASHSEED)" in proc.stderr


def test_client_imports_nothing_heavy(server, probes):
    path, env = server
    code = ("import sys; from pipeline import warm; rc = warm.run_client('warmprobe.echo', []); "
            "heavy = sorted(m for m in ('torch', 'numpy') if m in sys.modules); "
            "print('HEAVY', heavy, rc, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=probes, env=env, capture_output=True, text=True, timeout=60)
    assert "warm: worker" in proc.stderr and "HEAVY [] 0" in proc.stderr, proc.stderr


def test_server_leaves_when_its_parent_does(probes, base_env, tmp_path):
    parent = subprocess.Popen(["sleep", "600"])
    path = tmp_path / "p.sock"
    proc = _server(path, parent.pid, base_env)
    assert "warm: serving on" in proc.stdout.readline(), "the server found forking unsafe"
    parent.kill()
    parent.wait()
    assert proc.wait(timeout=15) == 0
    assert not path.exists()


# ---- small pieces ----------------------------------------------------------------------------------
def test_socket_address_names_this_host_only():
    assert warm.server_path(warm.socket_address("/tmp/x.sock")) == "/tmp/x.sock"
    assert warm.server_path("node42:/tmp/x.sock") is None or socket.gethostname() == "node42"
    assert warm.server_path(None) is None and warm.server_path("/tmp/x.sock") is None


def test_refusal_ignores_the_per_job_thread_counts_only():
    server_env = {"PATH": "/bin", "OMP_NUM_THREADS": "8", "PYTHONPATH": "/a"}
    request = {"protocol": warm.PROTOCOL, "env": {"PATH": "/usr/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": "/a"}}
    assert warm.refusal(request, server_env) is None
    assert "PYTHONPATH" in warm.refusal({**request, "env": {"PYTHONPATH": "/b"}}, server_env)
    assert "protocol" in warm.refusal({**request, "protocol": 0}, server_env)


def test_socket_lives_in_a_private_unpredictable_directory(monkeypatch, tmp_path):
    """mkdtemp: 0700, ours, a random name, short whatever the working directory; no predictable /tmp path."""
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    paths = [warm.private_socket_path() for _ in range(2)]
    try:
        dirs = [Path(p).parent for p in paths]
        assert dirs[0] != dirs[1] and all(d.name.startswith(warm.SOCKET_DIR_PREFIX) for d in dirs)
        assert all(stat.S_IMODE(d.stat().st_mode) == 0o700 and d.stat().st_uid == os.getuid() for d in dirs)
        assert all(len(p.encode()) < 100 for p in paths)
        runtime = Path(tempfile.mkdtemp())  # a short per-user runtime directory, as $XDG_RUNTIME_DIR is
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        paths.append(warm.private_socket_path())
        assert Path(paths[-1]).parent.parent == runtime
    finally:
        for p in paths:
            Path(p).parent.rmdir()
        runtime.rmdir()


def test_a_listener_of_another_user_is_never_sent_a_job(server, capsys):
    path, _ = server
    assert warm.connect(str(path), uid=os.getuid() + 1) is None  # the socket's owner is not the expected user
    assert "not this user: running fresh" in capsys.readouterr().err
    sock = warm.connect(str(path))
    assert sock is not None
    sock.close()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv") or not Path("/usr/bin/python3").exists(),
                    reason="needs root, setpriv and a system python to act as a second user")
def test_a_second_user_cannot_reach_the_server(server, probes):
    """`nobody` cannot open the private directory; with the directory opened up, the server still hangs up on it."""
    path, _ = server
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept OSError as e:\n    print('refused', type(e).__name__); sys.exit()\n"
             "s.settimeout(5)\n"
             "print('closed' if s.recv(1) == b'' else 'answered')\n")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", probe, str(path)]
    private = Path(warm.private_socket_path())
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(private))  # a socket in a directory `start` makes: nobody cannot even reach it
    listener.listen(1)
    try:
        out = subprocess.run([*as_nobody[:-1], str(private)], capture_output=True, text=True, timeout=30).stdout
        assert out.startswith("refused PermissionError"), out
    finally:
        listener.close()
        private.unlink()
        private.parent.rmdir()
    top = Path(tempfile.gettempdir()).resolve()  # every folder below it on the way (pytest's, xdist's worker folder too)
    modes = {p: p.stat().st_mode for p in path.resolve().parents if top in p.parents}
    try:
        for p in modes:
            p.chmod(modes[p] | 0o055)
        path.chmod(0o777)
        out = subprocess.run(as_nobody, capture_output=True, text=True, timeout=30).stdout
        assert out.strip() == "closed", out  # SO_PEERCRED: another uid is hung up on, no worker waits for it
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
        path.chmod(0o600)


def test_limits_niceness_and_affinity_of_the_jobs_shell_reach_the_worker(server, probes, base_env):
    path, env = server
    shell = "ulimit -n 512; exec nice -n 3 taskset -c 0 {python} -m pipeline.warm warmprobe.limits"
    outs = []
    for job_env in (env, {**env, warm.ENV_SWITCH: "0"}):  # warm, then fresh
        proc = subprocess.run(["bash", "-c", shell.format(python=sys.executable)], cwd=probes, env=job_env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        outs.append(json.loads(proc.stdout.splitlines()[-1]))
    assert outs[0] == outs[1] == {"nofile": 512, "nice": os.getpriority(os.PRIO_PROCESS, 0) + 3, "cpus": [0]}


def test_a_memory_limit_runs_the_job_fresh_so_it_bites_as_it_would(server, probes):
    path, env = server
    shell = f"ulimit -v 2000000; exec {sys.executable} -m pipeline.warm warmprobe.alloc"
    proc = subprocess.run(["bash", "-c", shell], cwd=probes, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "MemoryError" in proc.stderr  # the 3 GiB allocation fails, as fresh
    assert "running fresh (a memory limit is set" in proc.stderr


def test_os_exit_in_a_job_gives_its_status(server, probes, base_env):
    path, env = server
    fresh = run(probes, base_env, "warmprobe.hard_exit", warm_client=False)
    warm_proc = run(probes, env, "warmprobe.hard_exit")
    assert fresh.returncode == warm_proc.returncode == 5, warm_proc.stderr


def test_a_stopped_server_lets_the_job_run_fresh_within_the_timeout(probes, base_env, tmp_path):
    path = Path(warm.private_socket_path())
    proc = _server(path, os.getpid(), base_env)
    env = {**base_env, warm.ENV_SOCKET: warm.socket_address(str(path)), warm.ENV_TIMEOUT: "2"}
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        start = time.monotonic()
        out = run(probes, env, "warmprobe.echo", "x")
        assert out.returncode == 0 and out.stdout == 'out ["x"] \n', out.stderr
        assert "no answer from the server within 2 s" in out.stderr and time.monotonic() - start < 60
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.communicate(timeout=30)
    assert not path.exists() and not path.parent.exists()  # the server removed its private directory


# ---- Snakemake glue ------------------------------------------------------------------------------
class _Workflow:
    """The attributes of snakemake.workflow.Workflow that `start_for_workflow` reads."""

    def __init__(self, **overrides: bool) -> None:
        self.__dict__.update({"local_exec": True, "is_main_process": True, "dryrun": False, "touch": False,
                              **overrides})


@pytest.mark.parametrize("overrides", [{"local_exec": False}, {"is_main_process": False}, {"dryrun": True},
                                       {"touch": True}])
def test_no_server_for_cluster_subprocess_dry_or_touch_runs(overrides, monkeypatch):
    monkeypatch.setattr(warm.server, "start", lambda *a, **k: pytest.fail("started a server"))
    assert warm.start_for_workflow(_Workflow(**overrides), sys.executable) is None


def test_pipeline_warm_0_starts_no_server(monkeypatch, tmp_path):
    monkeypatch.setenv(warm.ENV_SWITCH, "0")
    assert warm.start(sys.executable, str(tmp_path)) is None
    assert not (tmp_path / ".snakemake").exists()


def test_start_sets_the_variable_and_stop_removes_the_socket(monkeypatch, tmp_path, base_env):
    monkeypatch.setenv("PYTHONPATH", base_env["PYTHONPATH"])  # this checkout's pipeline in the server
    monkeypatch.delenv(warm.ENV_SOCKET, raising=False)
    path = warm.start(sys.executable, str(tmp_path), timeout_s=180)
    try:
        assert Path(path).parent.name.startswith(warm.SOCKET_DIR_PREFIX)
        assert warm.server_path(os.environ[warm.ENV_SOCKET]) == path
        assert warm.connect(path) is not None, "start returned before the server accepted"
    finally:
        warm.stop()
    assert warm.ENV_SOCKET not in os.environ and not Path(path).exists() and not Path(path).parent.exists()


def _process_state(pid: int) -> str:
    """The one-letter state of /proc/<pid>/stat (R, S, T = stopped, ...)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_z_stops_the_worker_and_the_client_and_fg_resumes_both(server, probes):
    path, env = server
    client, worker = _sleeping_job(probes, env, "pid_tstp")
    try:
        client.send_signal(signal.SIGTSTP)  # what the terminal sends on Ctrl-Z
        assert wait_for(lambda: _process_state(worker) == "T" and _process_state(client.pid) == "T", 10), "not stopped"
        client.send_signal(signal.SIGCONT)  # what the shell sends on fg / bg
        assert wait_for(lambda: _process_state(worker) != "T" and _process_state(client.pid) != "T", 10), "not resumed"
    finally:
        client.terminate()
        client.wait(timeout=10)
