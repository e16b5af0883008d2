"""Process isolation for candidate code: what every process that runs it enters first.

A candidate's source is hostile input. It runs only in worker processes started with
``launch`` (the checks' worker and the training trial's worker), never in the driver, an
agent or a Tune trainable. A worker calls ``isolate()`` as its first act and
``lock_down()`` after importing what it trusts and before the candidate's code loads:

- ``launch`` starts it in its own session with an environment that holds no secrets (no
  API keys, no cloud credentials: only PATH, locale and PYTHONPATH pass).
- ``isolate`` moves it into a user namespace of its own and new PID, mount, network, IPC and
  UTS namespaces behind a PID-1 reaper: when the worker ends, the kernel kills every process
  it left behind, ``setsid`` or not; a worker whose parent dies dies too. The user namespace
  is what lets an ordinary user (a laptop) create the others (the kernel's unprivileged user
  namespaces), and it makes the process limit the sandbox's own: counted per user namespace,
  not over every process of the user it runs as (as root, every sandbox's ``nobody``).
- ``lock_down`` hides the directories it is given under empty mounts, mounts a fresh /proc
  (the host's processes are invisible), private tmpfs over every shared writable directory
  (/tmp, /var/tmp, /dev/shm, /run), bind-mounts the worker's own scratch directory as its
  only persistent writable path and makes every other mount read-only; sets resource limits
  (address space, CPU time, file size, processes, no core dumps, no new privileges); then
  as root switches to the unprivileged ``nobody`` user, and without root drops every
  capability the user namespace gave it, so the candidate cannot undo a mount (and in a
  user namespace of its own it could not either: the kernel locks mounts inherited from
  a more privileged namespace together and keeps read-only ones read-only).

Without root the candidate runs as the user who started it: it can read what that user
can read, except the hidden directories (``gaps`` says so). Where the kernel refuses an
unprivileged user namespace, none of the namespaces are available; the worker says so
and keeps the resource limits and the clean environment.

Workers are forked from a per-process ``Zygote`` that imported torch and asiarch once, so a
check or a trial does not pay the interpreter's ~2 s start-up; a forked worker closes
everything it inherited and isolates itself exactly as a fresh interpreter would.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import queue
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x4000000, 0x8000000, 0x20000000, 0x40000000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x8, 0x20, 0x1000, 0x4000, 0x40000
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 0x400, 0x800, 0x200000
# a mount's flags as statvfs reports them, and as a remount must repeat them (a user namespace may not change them)
KEPT_MOUNT_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                    (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
CAPABILITY_VERSION_3 = 0x20080522
O_PATH = getattr(os, "O_PATH", 0o10000000)
NOBODY = 65534
PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")  # world-writable on the host: replaced by empty tmpfs
SCRATCH = "/tmp/asiarch-scratch"  # where the worker sees its scratch directory inside the mount namespace
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "PYTHONPATH")
PARENT_ENV = "ASIARCH_SANDBOX_PARENT"


@dataclass
class SandboxOptions:
    """Limits of a sandboxed training trial and how its final evaluation is audited.

    The defaults equal the ``sandbox`` section of ``conf/config.yaml`` (tests/test_config_defaults.py).
    The checks' worker has its own, smaller limits in ``asiarch.checks.CheckOptions``.
    """

    memory_mb: int = 8192  # address space the candidate may add to the trial worker's
    scratch_mb: int = 2048  # the largest file the worker may write (its checkpoints)
    max_processes: int = 64  # threads count too (torch's pools)
    startup_timeout: float = 120.0  # seconds for the worker to import and lock down
    audit_rows: int = 4  # LM rows (and half as many MQAR rows) re-run in a fresh process for the causality audit
    audit_tolerance: float = 1e-3  # largest logit difference a causal design shows between the two processes
    # every evaluation a decision reads is audited; each other one with this chance, drawn by the parent where the
    # candidate cannot predict it. 1 (all of them) costs below run-to-run noise on CPU (bench_sandbox: 54.2 against
    # 54.3 CPU seconds for a 192-step cpu_tiny trial); lower it where a fresh sandbox is dear (a GPU's start-up)
    spot_audit_fraction: float = 1.0
    # folders no process running candidate code may read (its checks and its trials), beyond those asiarch hides
    # itself (``asiarch.train.sandboxed.hidden_from_candidates``): without root the candidate runs as you
    hidden_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.spot_audit_fraction <= 1.0:
            raise ValueError(f"sandbox.spot_audit_fraction must be in [0, 1], got {self.spot_audit_fraction}")
        if isinstance(self.hidden_dirs, str):
            raise ValueError(f"sandbox.hidden_dirs must be a list of folders, got the string {self.hidden_dirs!r}")
        self.hidden_dirs = tuple(os.path.expanduser(str(folder)) for folder in self.hidden_dirs)

    def limits(self, cpu_seconds: int) -> dict[str, int]:
        return {"memory_mb": self.memory_mb, "cpu_seconds": cpu_seconds, "max_processes": self.max_processes,
                "file_mb": self.scratch_mb}


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def clean_env() -> dict[str, str]:
    """The worker's environment: nothing the candidate could steal, one thread per pool. Triton (fla's kernels on a
    GPU) keeps its compiled kernels under its home, which must be writable: the sandbox's private /tmp."""
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
                "HF_HUB_OFFLINE": "1", "HOME": "/nonexistent", "TRITON_HOME": "/tmp", "PYTHONWARNINGS": "ignore",
                PARENT_ENV: str(os.getpid())})
    return env


WORKERS = ("asiarch.checks.worker", "asiarch.train.worker")  # the modules a zygote may start
ZYGOTE_FD = "ASIARCH_ZYGOTE_FD"
# what every worker imports before it locks down: imported once by the zygote instead of once per worker.
# torch._dynamo: torch imports it (~900 modules, ~1.8 s of CPU) the first time an optimizer is built, which
# every trainer and training check does
PRELOADED = ("torch", "torch._dynamo", "torch.nn.functional", "torch.optim", "asiarch.arch.contract", "asiarch.arch.model",
             "asiarch.data.mqar", "asiarch.train.protocol", "asiarch.checks.executable", "asiarch.checks.worker",
             "asiarch.train.worker")


class _Forked:
    """A worker the zygote forked, with the parts of ``subprocess.Popen`` the callers use."""

    def __init__(self, pid: int, stdin, stdout, stderr, zygote: "Zygote"):
        self.pid, self.stdin, self.stdout, self.stderr, self._zygote = pid, stdin, stdout, stderr, zygote

    @property
    def returncode(self) -> int | None:
        return self.poll()

    def poll(self) -> int | None:
        return self._zygote.exit_code(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        code = self._zygote.exit_code(self.pid, wait=timeout if timeout is not None else 3600.0)
        if code is None:
            raise subprocess.TimeoutExpired(f"sandbox worker {self.pid}", timeout or 3600.0)
        return code


class Zygote:
    """A clean process that imported torch and asiarch once and forks sandbox workers on request.

    A worker started from scratch spends about 2 s importing torch; forked from the zygote it
    starts at once. The zygote holds nothing secret (it starts with ``clean_env``), runs no
    tensor code, and every child closes the control socket and every inherited descriptor
    before it becomes a worker; the child then isolates itself exactly as a fresh worker does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exits: dict[int, int] = {}
        self._changed = threading.Condition()
        self._spawned: queue.Queue[int | None] = queue.Queue()
        self._proc: subprocess.Popen | None = None
        self._sock = None

    def _start(self) -> None:
        import socket

        ours, theirs = socket.socketpair()
        started: queue.Queue[BaseException | subprocess.Popen] = queue.Queue()

        def keeper() -> None:
            # the zygote dies with the thread that started it (PR_SET_PDEATHSIG follows the thread):
            # this one lives as long as the process
            try:
                env = {**clean_env(), ZYGOTE_FD: str(theirs.fileno())}
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="lancedb fork support")
                    started.put(subprocess.Popen([sys.executable, "-m", "asiarch.sandbox"], pass_fds=(theirs.fileno(),),
                                                 env=env, stdin=subprocess.DEVNULL, start_new_session=True))
            except BaseException as err:  # noqa: BLE001 - reported to the caller below
                started.put(err)
                return
            threading.Event().wait()

        threading.Thread(target=keeper, name="asiarch-zygote", daemon=True).start()
        proc = started.get()
        theirs.close()
        if isinstance(proc, BaseException):
            raise proc
        self._proc, self._sock = proc, ours
        self._spawned = queue.Queue()
        threading.Thread(target=self._listen, args=(ours.makefile("r"),), daemon=True).start()

    def _listen(self, stream) -> None:
        for line in stream:
            message = json.loads(line)
            if "spawned" in message:
                self._spawned.put(message["spawned"])
            elif "exited" in message:
                with self._changed:
                    self._exits[message["exited"]] = message["code"]
                    self._changed.notify_all()
        self._spawned.put(None)  # the zygote is gone

    def exit_code(self, pid: int, wait: float = 0.0) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits, timeout=wait)
            return self._exits.get(pid)

    def spawn(self, module: str) -> _Forked:
        """Fork a worker running ``python -m module``'s main with fresh stdin, stdout and stderr pipes."""
        import socket

        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            pipes = [os.pipe() for _ in range(3)]
            theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
            try:
                socket.send_fds(self._sock, [json.dumps({"module": module}).encode() + b"\n"], theirs)
                pid = self._spawned.get(timeout=60)
            finally:
                for fd in theirs:
                    os.close(fd)
        if pid is None:
            raise RuntimeError("the sandbox zygote died")
        return _Forked(pid, os.fdopen(pipes[0][1], "w"), os.fdopen(pipes[1][0], "r"), os.fdopen(pipes[2][0], "r"), self)


def _zygote_main() -> None:
    """``python -m asiarch.sandbox``: import once, then fork one worker per request until the owner goes."""
    import importlib
    import runpy
    import select
    import socket

    sock = socket.socket(fileno=int(os.environ.pop(ZYGOTE_FD)))
    _die_with_parent(None)
    for name in PRELOADED:
        importlib.import_module(name)
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([sock], [], [], 0.1)
        if ready:
            message, fds, _, _ = socket.recv_fds(sock, 4096, 3)
            if not message:
                os._exit(0)  # the owner closed the socket
            module = json.loads(message.decode()).get("module")
            pid = os.fork()
            if pid == 0:
                try:
                    sock.close()
                    os.setsid()
                    for target, fd in enumerate(fds):
                        os.dup2(fd, target)
                    os.closerange(3, 1 << 16)  # nothing of the zygote's reaches the worker
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    os.environ[PARENT_ENV] = str(os.getppid())
                    if module not in WORKERS:
                        raise SystemExit(f"not a sandbox worker: {module!r}")
                    sys.stdin, sys.stdout, sys.stderr = (os.fdopen(0, "r"), os.fdopen(1, "w", buffering=1),
                                                         os.fdopen(2, "w", buffering=1))
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
                    code = 0
                except SystemExit as done:
                    code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                    if not isinstance(done.code, (int, type(None))):
                        print(done.code, file=sys.stderr)
                except BaseException:  # noqa: BLE001 - the worker's own error, as an interpreter would show it
                    import traceback

                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
            for fd in fds:
                os.close(fd)
            children.add(pid)
            sock.sendall(json.dumps({"spawned": pid}).encode() + b"\n")
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
            sock.sendall(json.dumps({"exited": pid, "code": code}).encode() + b"\n")


@functools.cache
def shared_zygote() -> Zygote:
    """This process's zygote, started on first use: one per process, like Ray's own worker pool."""
    return Zygote()


SCRATCH_KINDS = ("trial", "audit")  # the sandboxed runs that keep a scratch folder
SCRATCH_NAME = re.compile(rf"asiarch-(?:{'|'.join(SCRATCH_KINDS)})-(\d+)-[a-z0-9_]+")
ORPHAN_AFTER_SECONDS = 600.0  # untouched this long with its process gone: left behind, not in use


def scratch_dir(kind: str) -> str:
    """A fresh folder for one sandboxed run (``kind``: trial or audit), named after this process.

    A process killed mid-run (Tune ending a trial's actor, a node dying) never removes its own
    folder, and a trial's holds its checkpoints (tens of MB): folders whose process is gone are
    removed here first, so they cannot pile up in the temp directory over a campaign.
    """
    if kind not in SCRATCH_KINDS:
        raise ValueError(f"unknown scratch kind {kind!r}; one of {SCRATCH_KINDS}")
    remove_orphan_scratch()
    return tempfile.mkdtemp(prefix=f"asiarch-{kind}-{os.getpid()}-")


def remove_orphan_scratch(root: str | None = None, min_age: float = ORPHAN_AFTER_SECONDS) -> list[str]:
    """Remove the scratch folders of processes that no longer exist and that nothing has written to for
    ``min_age`` seconds (a folder in use gets a new file at every report); returns their paths."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = SCRATCH_NAME.fullmatch(entry.name)
        if match is None or os.path.exists(f"/proc/{match[1]}"):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or time.time() - entry.stat(follow_symlinks=False).st_mtime < min_age:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(entry.path)
    return removed


PROBE_LIMITS = {"memory_mb": 256, "cpu_seconds": 10, "max_processes": 8, "file_mb": 0}


def gaps_here(hide: Sequence[str] = (), timeout: float = 60.0) -> list[str]:
    """What the sandbox lacks on this machine, as a worker started from this process finds it: a process that
    isolates itself and locks down as every worker does, and runs nothing else (0.1-0.2 s). A campaign prints
    it once at its start, so a user whose kernel refuses unprivileged user namespaces learns that candidates
    run without namespaces before any runs, not from a check report. ``hide``: folders it should hide."""
    script = ("import json, sys\nfrom asiarch.sandbox import isolate, lock_down\ngaps = isolate()\n"
              "_, more = lock_down(json.loads(sys.argv[1]), isolated=not gaps, hide=json.loads(sys.argv[2]))\n"
              "print(json.dumps(gaps + more))")
    try:
        done = subprocess.run([sys.executable, "-c", script, json.dumps(PROBE_LIMITS), json.dumps(list(hide))],
                              env=clean_env(), capture_output=True, text=True, timeout=timeout)
        return list(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as err:
        return [f"unknown: the sandbox's probe failed ({type(err).__name__}: {str(err)[:200]})"]


def launch(module: str, request: dict[str, Any], fork: bool = True, keep_stdin: bool = False) -> subprocess.Popen | _Forked:
    """Start ``python -m module`` as a sandbox worker and hand it ``request`` (one JSON line on stdin).

    ``fork``: fork it from this process's zygote (no interpreter start-up); a fresh
    interpreter when that is off or the zygote cannot be started. ``keep_stdin``: leave stdin
    open after the request, for a worker the parent answers while it runs (``ParentClock``).
    """
    proc = None
    if fork:
        try:
            proc = shared_zygote().spawn(module)
        except (OSError, RuntimeError, queue.Empty) as err:
            warnings.warn(f"the sandbox zygote failed ({err}); starting a fresh interpreter per worker", stacklevel=2)
    if proc is None:
        with warnings.catch_warnings():  # fork+exec runs no LanceDB code in the child; its fork warning does not apply
            warnings.filterwarnings("ignore", message="lancedb fork support")
            proc = subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=clean_env(), start_new_session=True, text=True)
    proc.stdin.write(json.dumps(request) + "\n")
    if keep_stdin:
        proc.stdin.flush()
    else:
        proc.stdin.close()
    return proc


def kill(proc: subprocess.Popen | _Forked) -> None:
    """Kill the worker's whole process group (the namespace's reaper takes the rest with it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def _tree(proc: subprocess.Popen | _Forked) -> dict[int, list[bytes]] | None:
    """The ``/proc/<pid>/stat`` fields after the name of the worker and every process under it, read from the
    host's /proc by the parent (the candidate cannot forge them). None where /proc cannot be read."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[bytes]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        children.setdefault(int(fields[1]), []).append(int(entry))  # state, ppid, ...
        stats[int(entry)] = fields
    if proc.pid not in stats:
        return None
    tree, frontier = {}, [proc.pid]
    while frontier:
        pid = frontier.pop()
        tree[pid] = stats[pid]
        frontier.extend(children.get(pid, ()))
    return tree


def cpu_seconds(proc: subprocess.Popen | _Forked) -> float | None:
    """CPU time (user + system) the worker and every process under it have used, by the kernel's count.

    Read from the host's /proc by the parent, so the candidate cannot forge it, and unlike wall
    time it does not grow when other work shares the cores. None where /proc cannot be read."""
    tree = _tree(proc)
    if tree is None:
        return None
    # utime (14th field), stime, cutime (reaped children), cstime: the 12th-15th after the name
    return sum(sum(int(x) for x in fields[11:15]) for fields in tree.values()) / os.sysconf("SC_CLK_TCK")


def _thread_stats(pid: int, name: str) -> list[bytes]:
    """Each thread's ``/proc/<pid>/task/<tid>/<name>`` (empty when the process ended while we looked)."""
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/{name}", "rb") as f:
                out.append(f.read())
    except OSError:
        pass
    return out


def cpu_ns(proc: subprocess.Popen | _Forked, tree: dict[int, list[bytes]] | None = None) -> int | None:
    """CPU time in nanoseconds the worker and every process under it have used, from the kernel's per-thread
    accounting (``schedstat``; processes already reaped count through their parent's cutime and cstime, in clock
    ticks). Exact for a thread that is not running when it is read (the kernel settles a thread's count when it
    stops), within a scheduler tick for one that is. None where /proc cannot be read. ``ParentClock``'s clock.
    ``tree``: the worker's processes as ``_tree`` found them a moment ago (saves a scan of /proc)."""
    tree = tree or _tree(proc)
    if tree is None:
        return None
    tick_ns = 10**9 // os.sysconf("SC_CLK_TCK")
    total = 0
    for pid, fields in tree.items():
        total += (int(fields[13]) + int(fields[14])) * tick_ns
        total += sum(int(line.split()[0]) for line in _thread_stats(pid, "schedstat") if line.split())
    return total


def running_threads(proc: subprocess.Popen | _Forked, tree: dict[int, list[bytes]] | None = None) -> int:
    """Threads of the worker's process tree running now (state R): ``ParentClock`` waits for none before it
    reads the count a run ended with. ``tree``: as for ``cpu_ns``."""
    tree = tree or _tree(proc) or {}
    return sum(line.rsplit(b")", 1)[1].split()[0] == b"R" for pid in tree for line in _thread_stats(pid, "stat"))


def exit_cause(code: int | None) -> str:
    """How a worker ended, in words; the reaper reports a signal death as 128 + signal."""
    if code is not None and code > 128 and code - 128 in signal.valid_signals():
        code = -(code - 128)
    if code is not None and code < 0:
        cause = f"killed by signal {signal.Signals(-code).name}"
        if -code == signal.SIGXCPU:
            cause += " (CPU-time limit)"
        elif -code == signal.SIGKILL:
            cause += " (likely the memory limit)"
        return cause
    return f"exited with status {code}"


class Reader:
    """The parent's side of the protocol: the worker's stamped lines, its stderr tail, and EOF."""

    def __init__(self, proc: subprocess.Popen, nonce: str):
        self.proc, self.nonce = proc, nonce
        self.lines: queue.Queue[tuple[str, float | None] | None] = queue.Queue()  # with the CPU seconds at arrival
        self.cpu_at_record: float | None = None  # the worker's CPU seconds when the last yielded record arrived
        self.deadline: float | None = None  # time.monotonic() past which no record is read (expire_in)
        self.stderr_tail: deque[str] = deque(maxlen=40)
        threading.Thread(target=self._pump, args=(proc.stdout, lambda line: self.lines.put((line, cpu_seconds(proc))), True),
                         daemon=True).start()
        threading.Thread(target=self._pump, args=(proc.stderr, self.stderr_tail.append, False), daemon=True).start()

    def _pump(self, stream, sink, is_protocol: bool) -> None:
        for line in stream:
            sink(line)
        if is_protocol:
            self.lines.put(None)

    def expire_in(self, seconds: float | None) -> None:
        """A wall-clock deadline ``seconds`` from now (None: none) that records keep no worker past: a worker
        that keeps writing never goes silent, so the silence timeout alone would let it run on."""
        self.deadline = None if seconds is None else time.monotonic() + seconds

    @property
    def expired(self) -> bool:
        """Whether the deadline has passed (a ``None`` record then means that, not silence)."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def records(self, timeout: float | None = None) -> Iterator[dict[str, Any] | None]:
        """Protocol records until the worker says ``done`` or its stdout closes; a final ``None`` when
        ``timeout`` seconds pass without one, or when the deadline (``expire_in``) passes, whatever it writes
        (the caller may change ``self.timeout`` and the deadline between records)."""
        self.timeout = timeout
        while True:
            wait = self.timeout
            if self.deadline is not None:
                left = self.deadline - time.monotonic()
                wait = left if wait is None else min(wait, left)
            try:
                if self.expired:  # lines still queued do not count past it
                    raise queue.Empty
                line = self.lines.get(timeout=wait)
            except queue.Empty:
                yield None  # the worker went silent or ran past its deadline: the caller kills it and says so
                return
            if line is None:
                return
            line, cpu = line
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict) or record.pop("nonce", None) != self.nonce:
                continue  # not from the worker's protocol channel
            if record.get("done"):
                return
            self.cpu_at_record = cpu  # read as the line arrived: a worker that runs ahead is not read later
            yield record

    def died(self) -> str:
        """Why the worker ended without saying done, with the last lines it wrote to stderr."""
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        detail = "".join(list(self.stderr_tail)[-3:]).strip()
        return f"the worker died: {exit_cause(self.proc.poll())}" + (f"; {detail[-300:]}" if detail else "")


class Channel:
    """The worker's protocol stream: a private duplicate of stdout, each line stamped with the run's nonce.

    The candidate's own prints go to stderr (stdout is redirected there), and it cannot
    forge a line the parent accepts without the nonce, which only this object holds.
    """

    def __init__(self, nonce: str):
        self.stream = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self.nonce = nonce

    def emit(self, record: dict[str, Any]) -> None:
        self.stream.write(json.dumps({**record, "nonce": self.nonce}, default=float) + "\n")
        self.stream.flush()


class ParentClock:
    """A worker's clock that only the parent reads: each run is timed from the kernel's count of the worker's
    CPU time (``cpu_ns``), read by the parent while the worker waits on stdin before and after it.

    The worker announces a run and blocks; the parent reads the count and answers with the run's input
    (a scale and a shift it draws, so nothing can be computed before the run starts); the worker runs and
    reports a digest of what it computed, and blocks; the parent waits until no thread of the worker's runs,
    reads the count again and answers with the seconds between. Patching the clocks in the candidate's
    process changes nothing the parent reads; ``ParentStopwatch`` is the parent's side.
    """

    def __init__(self, emit: Callable[[dict[str, Any]], None], stdin) -> None:
        self.emit, self.stdin = emit, stdin

    def __call__(self, label: dict[str, Any], run: Callable[[dict[str, Any]], Any]) -> float | None:
        self.emit({"timing": "start", **label})
        go = json.loads(self.stdin.readline())
        digest = run(go)
        self.emit({"timing": "stop", "digest": digest})
        return json.loads(self.stdin.readline())["seconds"]


class ParentStopwatch:
    """The parent's side of ``ParentClock``: answers the worker's timing records and keeps every run it timed
    (its label, the input it drew, the seconds by the kernel's count, the digest the worker reported)."""

    def __init__(self, proc: subprocess.Popen | _Forked) -> None:
        import secrets

        self.proc, self.random = proc, secrets.SystemRandom()
        self.runs: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None

    def answer(self, record: dict[str, Any]) -> None:
        """Handle one ``{"timing": ...}`` record; a record out of turn ends the protocol (the worker is killed
        by the caller when it then blocks)."""
        if record["timing"] == "start" and self._open is None:
            go = {"scale": self.random.uniform(0.5, 1.5), "shift": self.random.uniform(-0.5, 0.5),
                  "seed": self.random.randrange(2**31)}
            label = {k: v for k, v in record.items() if k != "timing"}
            self._open = {**label, "go": go, "start_ns": cpu_ns(self.proc)}
            self._reply(go)
        elif record["timing"] == "stop" and self._open is not None:
            tree = _tree(self.proc)  # one scan of /proc; the processes a run may have started are in it
            settle = time.monotonic() + 0.05  # the worker blocks on stdin right after its report: its threads'
            while running_threads(self.proc, tree) and time.monotonic() < settle:  # counts settle when they stop
                time.sleep(0.0005)
            end, run, self._open = cpu_ns(self.proc, tree), self._open, None
            start = run.pop("start_ns")
            run["seconds"] = None if None in (start, end) else (end - start) / 1e9
            run["digest"] = record.get("digest")
            self.runs.append(run)
            self._reply({"seconds": run["seconds"]})

    def _reply(self, message: dict[str, Any]) -> None:
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the worker is gone; its reader says how it ended


def _die_with_parent(parent: int | None) -> None:
    _libc().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed


def _reap_until(pid: int) -> int:
    """Wait for ``pid``, reaping any other child meanwhile; its exit code, or 128 + the killing signal."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 1
        if done == pid:
            return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _id_mapper() -> tuple[int, int]:
    """A child that, once told (a byte on the returned pipe), maps every id of its parent's new user namespace to
    the same id outside; exits 0 when it did. Returns (its pid, the pipe's end to tell it on)."""
    ready, go = os.pipe()
    target = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(go)
        code = 1
        try:
            if os.read(ready, 1):
                for name in ("uid_map", "gid_map"):
                    with open(f"/proc/{target}/{name}", "w") as f:
                        f.write("0 0 4294967295")
                code = 0
        except OSError:
            pass
        os._exit(code)
    os.close(ready)
    return pid, go


def _map_ids(helper: tuple[int, int] | None, uid: int, gid: int) -> str | None:
    """Map the ids of the user namespace this process just entered (root's by its ``_id_mapper``); why not, or None."""
    if helper is not None:
        pid, go = helper
        os.write(go, b"x")
        os.close(go)
        return None if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0 else "the helper outside failed"
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as err:
        return err.strerror
    return None


def isolate() -> list[str]:
    """A worker's first act: new namespaces behind a PID-1 reaper. Returns what was not available.

    A user namespace comes first: as root every id maps to itself (written by a helper that stays
    outside it), without root only the caller's own user and group (nothing else is the caller's to
    map). Only the process that returns runs on; the two above it (the one in the host's PID
    namespace and the reaper) wait, relay the exit status and never return.
    """
    parent = os.environ.get(PARENT_ENV)
    _die_with_parent(int(parent) if parent else None)
    uid, gid = os.geteuid(), os.getegid()
    libc = _libc()
    # root's map (every id as it is: its files stay its own, nobody stays nobody) needs root outside the new
    # namespace: a helper forked before it writes the map; a user maps only its own ids, which it may itself
    helper = _id_mapper() if uid == 0 else None
    others = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
    if libc.unshare(CLONE_NEWUSER | others) == 0:
        _die_with_parent(int(parent) if parent else None)  # entering the user namespace disarmed it
        problem = _map_ids(helper, uid, gid)
        if problem:
            return [f"PID, mount and network namespaces (the user namespace's ids could not be mapped: {problem})"]
    else:
        errno = ctypes.get_errno()
        if helper is not None:
            os.close(helper[1])
            os.waitpid(helper[0], 0)
        if uid:
            return [f"PID, mount and network namespaces, private /tmp, a read-only filesystem and the user switch "
                    f"(not root, and the kernel refused a user namespace: {os.strerror(errno)})"]
        if libc.unshare(others) != 0:  # root, on a kernel without user namespaces: the others alone
            return [f"PID, mount and network namespaces (unshare: {os.strerror(ctypes.get_errno())})"]
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # nothing mounted here reaches the host
        return [f"a private mount namespace (errno {ctypes.get_errno()})"]
    sys.stdout.flush()
    reaper = os.fork()
    if reaper:
        os._exit(_reap_until(reaper))  # in the host's namespace: relay how the sandbox ended
    _die_with_parent(None)  # PID 1 of the new namespace; its death ends every process in it
    worker = os.fork()
    if worker:
        signal.signal(signal.SIGTERM, lambda *_: os.kill(worker, signal.SIGKILL))
        os._exit(_reap_until(worker))
    _die_with_parent(None)
    return []


def readable_by_others(path: str) -> bool:
    """Whether a user with no rights of its own can reach and read ``path`` (o+rx on every directory)."""
    current = os.path.realpath(path)
    while True:
        if os.stat(current).st_mode & 0o005 != 0o005:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def _same_namespace(kind: str, pid: str) -> bool:
    """Whether this process shares its ``kind`` namespace with ``pid`` (read through the host's /proc)."""
    try:
        return os.readlink(f"/proc/self/ns/{kind}") == os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return False


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"user {uid}"


def _mount(source: bytes, target: str, kind: bytes | None, flags: int, data: bytes | None = None) -> None:
    libc = _libc()
    if libc.mount(source, target.encode(), kind, flags, data) != 0:
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")


def _read_only_elsewhere(writable: set[str]) -> list[str]:
    """Remount every mount of this namespace read-only but ``writable`` and /proc; the gaps (those it could
    not). Without it a candidate could write wherever its user can: as ``nobody``, any world-writable
    directory; without root, every file of the user who started it (the memory, the runs, the venv)."""
    with open("/proc/self/mountinfo") as f:
        points = [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4]) for line in f]
    failed = []
    for point in dict.fromkeys(points):
        if point in writable or point == "/proc" or point.startswith("/proc/"):
            continue
        try:
            flags = os.statvfs(point).f_flag
        except OSError:
            continue  # out of reach: under a directory this namespace covers
        if flags & os.ST_RDONLY:
            continue
        kept = sum(ms for st, ms in KEPT_MOUNT_FLAGS if flags & st)
        try:
            _mount(b"none", point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
        except OSError:
            failed.append(point)
    return [f"writable, could not be made read-only: {', '.join(failed[:5])}"] if failed else []


def _drop_capabilities() -> None:
    """Give up every capability (effective, permitted, inheritable, bounding): what the user namespace gave the
    worker would let the candidate unmount what hides a directory, or remount the filesystem writable."""
    libc = _libc()
    for capability in range(64):
        libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0)  # past the kernel's last capability: EINVAL, ignored
    header, nothing = (ctypes.c_uint32 * 2)(CAPABILITY_VERSION_3, 0), (ctypes.c_uint32 * 6)()
    if libc.capset(header, nothing) != 0:
        raise OSError(ctypes.get_errno(), f"capset: {os.strerror(ctypes.get_errno())}")


def lock_down(limits: dict[str, Any], scratch: str | None = None, isolated: bool = False,
              hide: tuple[str, ...] | list[str] = ()) -> tuple[str, list[str]]:
    """Restrict this process before candidate code loads; returns (working directory, gaps).

    ``scratch``: a directory the worker may write (the parent reads results from it);
    without one the working directory is empty and read-only. ``isolated``: whether
    ``isolate()`` succeeded, so the mount namespace is ours to change. ``hide``: directories
    the candidate must not read (the downstream sets' answers, the corpus's sources, the
    evaluation secret), covered by an empty read-only tmpfs in this mount namespace.
    """
    gaps: list[str] = []
    root = os.geteuid() == 0
    hide = [folder for folder in hide if os.path.isdir(folder)]
    needed = [os.path.realpath(p) for p in (*sys.path, sys.prefix, scratch or "") if p]
    covering = [f for f in hide if any(n == os.path.realpath(f) or n.startswith(os.path.realpath(f) + os.sep)
                                       for n in needed)]
    if covering:  # hiding them would hide the interpreter's own files or the scratch directory
        gaps.append(f"readable, they hold the sandbox's own files: {', '.join(covering)}")
        hide = [f for f in hide if f not in covering]
    if hide and not isolated:
        gaps.append(f"readable, no mount namespace to hide them in: {', '.join(hide)}")
    if isolated and root and _same_namespace("user", "1"):  # the host's: isolate() fell back to the others alone
        gaps.append("a user namespace of its own: the process limit counts every sandbox's nobody processes together")
    if isolated:
        for folder in hide:
            _mount(b"tmpfs", folder, b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, b"size=4k,mode=555")
        keep = os.open(scratch, O_PATH | os.O_DIRECTORY) if scratch else None
        _mount(b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        for folder in PRIVATE_DIRS:
            if os.path.isdir(folder) and not os.path.islink(folder):
                _mount(b"tmpfs", folder, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=64m,mode=1777")
        if keep is not None:
            os.mkdir(SCRATCH, 0o700)
            _mount(f"/proc/self/fd/{keep}".encode(), SCRATCH, None, MS_BIND)
            os.close(keep)
            scratch = SCRATCH
        gaps += _read_only_elsewhere({*PRIVATE_DIRS, *hide, *([scratch] if scratch else [])})
    workdir = scratch or tempfile.mkdtemp(prefix="asiarch-sandbox-")  # before the file-size limit: tempfile probes by writing
    if scratch is None:
        os.chmod(workdir, 0o555)
    os.chdir(workdir)
    vm_kib = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0])
    address_space = vm_kib * 1024 + limits["memory_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    # SIGXCPU at the limit, SIGKILL only a few CPU seconds later: the parent then reports a CPU-time limit as
    # one (with equal limits the kernel sends both at once, and the kill read as the memory limit's)
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with an error instead of killing us
    file_bytes = int(limits.get("file_mb", 0)) * 2**20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    _libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    if not root and isolated:  # processes count per user namespace: this sandbox's own
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
        _drop_capabilities()
        user = _user_name(os.geteuid())
        gaps.append(f"user switch (not root): the candidate runs as {user} and can read what {user} can read, "
                    f"except the hidden folders")
        return workdir, gaps
    if not root:
        gaps.append("user switch and process limit (not root)")
        return workdir, gaps
    hidden = [p for p in (sys.prefix, os.path.dirname(os.path.dirname(__file__))) if not readable_by_others(p)]
    if hidden:
        # 'nobody' could not even import lazily from here; keep root, say so in the report
        gaps.append(f"user switch and process limit skipped: {hidden[0]} is not readable by others")
        return workdir, gaps
    if scratch is not None:
        os.chown(workdir, NOBODY, NOBODY)
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)  # from here on: no root, no writes to root's files
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))
    _die_with_parent(None)  # the credential change disarmed it
    return workdir, gaps


if __name__ == "__main__":
    _zygote_main()
