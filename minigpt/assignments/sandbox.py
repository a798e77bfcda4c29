"""Where a submission's code runs: a worker process per submission, sandboxed when possible.

Each worker gets a fresh, empty working directory; its own session and process group; limits on
CPU time, memory, processes and file size (``setrlimit``); when the grader runs as root, the
unprivileged user ``nobody``. With bubblewrap (``bwrap``, Debian/Ubuntu package ``bubblewrap``)
it also runs in new namespaces (no network, its own process tree, which dies with it) and sees
only the system, Python, the ``minigpt`` package and its ``assets`` folder, read-only, plus its
working directory: not the solution notebooks, the hidden tests, other submissions or the grade
files. Without bubblewrap (or where the kernel forbids its namespaces) the grader says so in
its output: the worker can then read whatever its user can read.

Everything the worker started is killed when it is closed: the bubblewrap process namespace, or
its process group plus any process that escaped it (the grader is a child subreaper, so
daemonised descendants come back to it as children and are killed too).
"""

from __future__ import annotations

import ctypes
import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .worker import write_frame

MAX_REPLY = 64 << 20  # bytes; a bigger reply is a failure of that request
NOBODY = 65534
_ROOT = "/grading"


class WorkerLost(BaseException):
    """The worker died or ran over its time: the request it was running failed.

    A ``BaseException`` (like ``KeyboardInterrupt``), so that a check's ``except Exception``
    around the learner's function cannot turn it into an ordinary failure message."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: wall seconds per request, CPU seconds and memory (bytes) for the
    whole worker, processes, and bytes per written file."""

    timeout: float = 120
    cpu_seconds: int = 900
    memory: int = 8 << 30
    processes: int = 256
    file_size: int = 64 << 20


@lru_cache(maxsize=None)
def _nobody_runs_python() -> bool:
    """Whether ``nobody`` can run Python outside the sandbox (the installation may sit in root's
    home, which only root can enter); the worker then runs as nobody, else as the grader's user."""
    pkg, _ = _package_dirs()
    try:
        return subprocess.run([sys.executable, "-c", "import IPython, minigpt"], capture_output=True, timeout=120,
                              env={"PYTHONPATH": str(pkg.parent), "HOME": "/tmp"}, cwd="/",
                              preexec_fn=_as_nobody).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@lru_cache(maxsize=None)
def bwrap_status() -> tuple[str | None, str]:
    """``(path to bwrap, "")`` if bubblewrap works here, else ``(None, reason)``."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None, "bubblewrap (bwrap) is not installed"
    try:
        p = subprocess.run([exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"bwrap does not run ({e})"
    if p.returncode != 0:
        return None, f"bwrap cannot create namespaces here ({' '.join(p.stderr.split())[:200]})"
    return exe, ""


def sandbox_description(sandbox: bool = True) -> str:
    """One line for the grade output: how submissions ran."""
    exe, why = bwrap_status() if sandbox else (None, "turned off (--no-sandbox)")
    user = "as nobody, " if os.geteuid() == 0 and (exe or _nobody_runs_python()) else ""
    if exe:
        return f"bubblewrap ({user}no network, package read-only, solutions not visible)"
    return (f"NONE: {why}; submissions ran {user}in their own process group with resource limits, but "
            "can read every file their user can read (install bubblewrap: apt-get install -y bubblewrap)")


def _as_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _python_dirs() -> list[str]:
    """Folders the worker's Python needs: its installation, the virtual environment, site-packages."""
    dirs = {os.path.realpath(sys.base_prefix), sys.prefix, os.path.realpath(sys.prefix),
            os.path.dirname(os.path.realpath(sys.executable))}
    for p in sys.path:
        if p and "site-packages" in p and os.path.isdir(p):
            dirs.add(p)
    # keep only outermost folders
    out = []
    for d in sorted(dirs, key=len):
        if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in out):
            out.append(d)
    return out


def _package_dirs() -> tuple[Path, Path]:
    import minigpt
    from minigpt.checkpoint import assets_dir

    return Path(minigpt.__file__).resolve().parent, assets_dir().resolve()


def _bwrap_argv(exe: str, work: Path) -> list[str]:
    pkg, assets = _package_dirs()
    # as root: no user namespace, so that the worker can become the real user nobody (whose
    # process count RLIMIT_NPROC limits); otherwise an unprivileged user namespace
    spaces = (["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
              if os.geteuid() == 0 else ["--unshare-all"])
    caps = ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"] if os.geteuid() == 0 else []  # to drop to nobody
    argv = [exe, *spaces, "--die-with-parent", "--new-session", "--cap-drop", "ALL", *caps,
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for d in ("/usr", "/etc", "/opt"):
        if os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
    for d in _python_dirs():
        argv += ["--ro-bind", d, d]
    argv += ["--ro-bind", str(pkg), f"{_ROOT}/lib/minigpt", "--bind", str(work), f"{_ROOT}/work"]
    if assets.is_dir():
        argv += ["--ro-bind", str(assets), f"{_ROOT}/assets"]
    argv += ["--chdir", f"{_ROOT}/work", "--"]
    return _with_parents(argv)


def _with_parents(argv: list[str]) -> list[str]:
    """Create the parents of each bind target with mode 0755 first (bwrap would make them 0700,
    which the worker, once it is nobody, could not traverse)."""
    out, made = [], {"/"}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--ro-bind", "--bind"):
            parents = [str(p) for p in reversed(Path(argv[i + 2]).parents) if str(p) not in made]
            for p in parents:
                out += ["--perms", "0755", "--dir", p]
                made.add(p)
            out += argv[i:i + 3]
            i += 3
            continue
        out.append(a)
        i += 1
    return out


def _env(home: str, pythonpath: str, assets: str) -> dict:
    keep = {k: os.environ[k] for k in ("LANG", "LC_ALL", "TZ") if k in os.environ}
    return {**keep, "PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": home, "PYTHONPATH": pythonpath,
            "MINIGPT_ASSETS": assets, "MINIGPT_PROGRESS": "0", "PYTHONHASHSEED": "0", "MPLBACKEND": "agg",
            "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.mpl", "OMP_NUM_THREADS":
            os.environ.get("OMP_NUM_THREADS", str(min(4, os.cpu_count() or 1))), "PYTHONDONTWRITEBYTECODE": "1"}


def _set_subreaper() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


class Worker:
    """One sandboxed worker process: ``run`` cells, ask the ``kind`` of an expression, ``call``
    a function; each request has a wall-time limit, after which the worker is killed."""

    def __init__(self, limits: Limits, sandbox: bool = True):
        self.limits = limits
        self.tmp = Path(tempfile.mkdtemp(prefix="minigpt-grade-"))
        self.work = self.tmp / "work"
        self.work.mkdir()
        self.log = self.tmp / "worker.log"
        self.log_tail = ""
        exe, _ = bwrap_status() if sandbox else (None, "")
        self.sandboxed = exe is not None
        nobody = os.geteuid() == 0 and (exe is not None or _nobody_runs_python())
        if nobody:
            os.chown(self.work, NOBODY, NOBODY)
        self.work.chmod(0o711)  # its parent is 0700; bwrap (caps dropped) must enter it
        pkg, assets = _package_dirs()
        if exe:
            argv = _bwrap_argv(exe, self.work)
            env = _env(f"{_ROOT}/work", f"{_ROOT}/lib", f"{_ROOT}/assets")
        else:
            argv = []
            env = _env(str(self.work), str(pkg.parent), str(assets))
        self.marker = f"MINIGPT_GRADING_RUN={os.urandom(8).hex()}".encode()
        env[self.marker.split(b"=")[0].decode()] = self.marker.split(b"=")[1].decode()
        r_req, w_req = os.pipe()
        r_rep, w_rep = os.pipe()
        argv += [sys.executable, "-m", "minigpt.assignments.worker", str(r_req), str(w_rep)]
        if exe and nobody:
            argv.append(str(NOBODY))  # the worker drops to nobody once Python has started
        _set_subreaper()
        lim = limits

        def setup() -> None:
            import resource

            for res, value in ((resource.RLIMIT_CPU, lim.cpu_seconds), (resource.RLIMIT_AS, lim.memory),
                               (resource.RLIMIT_FSIZE, lim.file_size), (resource.RLIMIT_CORE, 0)):
                resource.setrlimit(res, (value, value))
            if nobody and not exe:
                _as_nobody()
            if nobody or os.geteuid() != 0:
                resource.setrlimit(resource.RLIMIT_NPROC, (lim.processes, lim.processes))

        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                         cwd=self.work, pass_fds=(r_req, w_rep), start_new_session=True,
                                         preexec_fn=setup)
        os.close(r_req)
        os.close(w_rep)
        self.wfd, self.rfd = w_req, r_rep
        self._read(limits.timeout + 60, "start")  # the "ready" frame (imports IPython)

    def request(self, timeout: float | None = None, **req) -> dict:
        try:
            write_frame(self.wfd, pickle.dumps(req))
        except OSError:
            raise WorkerLost(self._why("died")) from None
        return self._read(self.limits.timeout if timeout is None else timeout, req["op"])

    def _read(self, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        r, _, _ = select.select([self.rfd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            self.close()
            raise WorkerLost(f"ran over the time limit ({timeout:g} s)")
        try:
            os.set_blocking(self.rfd, True)
            head = _read_exact_deadline(self.rfd, 4, deadline)
            if head is None:
                raise WorkerLost(self._why("died"))
            n = int.from_bytes(head, "big")
            if n > MAX_REPLY:
                raise WorkerLost(f"sent a reply of {n:,} bytes (limit {MAX_REPLY:,})")
            body = _read_exact_deadline(self.rfd, n, deadline)
            if body is None:
                raise WorkerLost(self._why("died"))
            reply = json.loads(body)
            if not isinstance(reply, dict):
                raise ValueError("not an object")
            return reply
        except WorkerLost:
            self.close()
            raise
        except (ValueError, UnicodeDecodeError, OSError) as e:
            self.close()
            raise WorkerLost(f"sent an unreadable reply ({e})") from None

    def _why(self, what: str) -> str:
        code = self.proc.poll()
        if code is None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            sig = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            what = f"was killed by {sig}" + (" (CPU time limit)" if sig == "SIGXCPU" else "")
        elif code is not None:
            what = f"exited (status {code})"
        return f"the kernel {what}: a crash, os._exit/sys.exit, or memory or CPU limits"

    def close(self) -> None:
        """Kill the worker and everything it started; remove its working directory."""
        for fd in (self.wfd, self.rfd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wfd = self.rfd = -1
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _reap_orphans(self.marker)
        try:
            with open(self.log, "rb") as f:
                f.seek(max(0, self.log.stat().st_size - 2000))
                self.log_tail = f.read().decode(errors="replace")
        except OSError:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read_exact_deadline(fd: int, n: int, deadline: float) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            raise WorkerLost("ran over the time limit while replying")
        b = os.read(fd, min(n - got, 1 << 20))
        if not b:
            return None
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _reap_orphans(marker: bytes) -> None:
    """Kill and reap processes that escaped the worker's process group (setsid, double fork) and
    were re-parented to the grader (a child subreaper): children of ours that carry this
    worker's environment marker, or no environment at all."""
    me = os.getpid()
    for _ in range(20):
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                env = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me and (marker in env or not env):
                found.append(int(entry))
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        if not found:
            return
        time.sleep(0.05)
