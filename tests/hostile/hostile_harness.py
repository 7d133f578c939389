"""Run one hostile case in its own process, within a time limit, and measure its peak memory.

``run_case(argv_or_code, timeout, mem_limit_mb) -> CaseResult(rc, stdout, stderr, seconds,
peak_mb, timed_out)``: ``argv`` (a list) runs ``yoloattn <argv>`` exactly as ``python -m
yoloattn.cli`` does (an uncaught exception prints its traceback and exits 1); a string runs as a
small Python program (``python -c``).

By default a case runs in a process forked from a *case server*: a Python process started once
(per test session) that has already imported torch and the yoloattn packages, so a case costs
a fork instead of a 5-15 s torch import. Each case process gets a new process group, ``stdin``
from /dev/null, its own stdout/stderr files and an address-space limit (``RLIMIT_AS``) of the
server's size plus ``mem_limit_mb`` plus a margin: a runaway case fails with ``MemoryError``
instead of swapping the machine. ``peak_mb`` is the ``ru_maxrss`` that ``os.wait4`` reports for
that one process; a forked process does not count the pages of the server's libraries that it
never touches (~0.6 GB of torch), so ``inherited_mb`` (the server's resident size minus the peak
of an empty forked case) is added back in :attr:`CaseResult.fresh_peak_mb`, the peak a fresh
``python -m yoloattn.cli`` would reach, which the bar checks. After ``timeout`` seconds the
case's process group is killed (``timed_out``). ``fresh=True`` runs a real ``python -m
yoloattn.cli`` / ``python -c`` instead (5-15 s more per case).

:func:`check_refused` / :func:`check_reported` state the bar of issue #16 (non-zero / zero exit,
one line naming the file, no traceback, time and memory) and return what was violated.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import resource
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
#: imported by the case server before the first fork (a failing import is only reported).
PRELOAD = (
    "numpy",
    "PIL.Image",
    "torch",
    "yoloattn.cli",
    "yoloattn.data",
    "yoloattn.models.official_pickle",
    "yoloattn.models.weights",
    "yoloattn.models.detector",
)
DEFAULT_TIMEOUT = 60.0
DEFAULT_MEM_MB = 2048.0
_AS_MARGIN_MB = 1024  # thread arenas and library reservations: address space, not memory
_FRESH_AS_MB = 6144  # a fresh interpreter's address space once torch is imported (~3.3 GB)


@dataclass(repr=False)
class CaseResult:
    """What one case did: exit status (negative: killed by that signal), output, cost."""

    rc: int
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool = False
    what: str = ""
    inherited_mb: float = 0.0

    @property
    def fresh_peak_mb(self) -> float:
        """Estimated peak of the same case in a fresh interpreter (see the module docstring)."""
        return self.peak_mb + self.inherited_mb

    @property
    def err_lines(self) -> list[str]:
        """The non-empty lines of stderr."""
        return [ln for ln in self.stderr.splitlines() if ln.strip()]

    def __repr__(self) -> str:
        return (
            f"case {self.what}: rc={self.rc} timed_out={self.timed_out} {self.seconds:.1f}s "
            f"peak {self.peak_mb:.0f} MB (fresh ~{self.fresh_peak_mb:.0f} MB)\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n"
            f"--- stderr ---\n{self.stderr[-3000:]}"
        )


def _status_mb(key: str = "VmSize") -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _limit_as(mb: float) -> None:
    soft = int(mb * 1024 * 1024)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _reap(pid: int, timeout: float) -> tuple[int, float, bool]:
    """Wait for ``pid`` (killing its group after ``timeout`` s): ``(rc, peak_mb, timed_out)``."""
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
            try:
                target()
                return
            except (ProcessLookupError, PermissionError):
                continue

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)
    finally:
        timer.cancel()
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, fired.is_set()


def _child_main(req: dict) -> int:
    """Body of a forked case process: what ``python -m yoloattn.cli`` / ``python -c`` would do."""
    os.setpgid(0, 0)
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        new = os.open(path, flags, 0o644)
        os.dup2(new, fd)
        os.close(new)
    _limit_as(_status_mb() + req["mem_limit_mb"] + _AS_MARGIN_MB)
    if req.get("cwd"):
        os.chdir(req["cwd"])
    os.environ.update(req.get("env") or {})
    rc = 0
    try:
        if req.get("argv") is not None:
            sys.argv = ["yoloattn", *req["argv"]]
            from yoloattn.cli import main

            rc = int(main(list(req["argv"])) or 0)
        else:
            sys.argv = ["-c"]
            exec(compile(req["code"], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:  # as the interpreter does: None -> 0, int -> itself, else print -> 1
        if e.code is None or isinstance(e.code, int):
            rc = int(e.code or 0)
        else:
            print(e.code, file=sys.stderr)
            rc = 1
    except BaseException:  # noqa: BLE001 -- an uncaught exception: traceback, exit 1
        traceback.print_exc()
        rc = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    return rc


def _run_forked(req: dict) -> dict:
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the case process: never returns into the server loop
        code = 1
        try:
            code = _child_main(req)
        finally:
            os._exit(code & 0xFF)
    rc, peak, timed_out = _reap(pid, float(req["timeout"]))
    return {"rc": rc, "peak_mb": peak, "timed_out": timed_out, "seconds": time.monotonic() - t0}


def serve() -> None:
    """The case server: preload, then one JSON request per stdin line, one JSON answer per line."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    failed = {}
    for mod in PRELOAD:
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001 -- a case importing it will show the error itself
            failed[mod] = f"{type(e).__name__}: {e}"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    out = sys.stdout
    hello = {"ready": True, "failed": failed, "vm_mb": _status_mb(), "rss_mb": _status_mb("VmRSS")}
    out.write(json.dumps(hello) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = _run_forked(json.loads(line))
        except Exception as e:  # noqa: BLE001
            answer = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class CaseRunner:
    """Client of one case server (started on first use); also runs fresh-interpreter cases."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, start_timeout: float = 300.0) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="hostile-"))
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._n = 0
        self.preload_failures: dict[str, str] = {}
        self._server_rss_mb = 0.0
        self._inherited_mb: float | None = None

    def _server(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "server.stderr", "w"),  # noqa: SIM115 -- lives with the server
            text=True,
            env=_env(),
            cwd=self.workdir,
        )
        hello = self._readline(self.start_timeout)
        self.preload_failures = hello.get("failed", {})
        self._server_rss_mb = float(hello.get("rss_mb", 0.0))
        self._inherited_mb = None
        return self._proc

    def inherited_mb(self) -> float:
        """The server's resident pages a forked case does not count (measured once)."""
        if self._inherited_mb is None:
            self._inherited_mb = 0.0  # while measuring
            base = self.run("pass", timeout=60).peak_mb
            self._inherited_mb = max(0.0, self._server_rss_mb - base)
        return self._inherited_mb

    def _readline(self, timeout: float) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            err = (self.workdir / "server.stderr").read_text(errors="replace")[-2000:]
            self.close()
            raise RuntimeError(f"hostile case server gave no answer within {timeout:.0f} s: {err}")
        return json.loads(line)

    def run(
        self,
        argv_or_code: Sequence[str] | str,
        timeout: float = DEFAULT_TIMEOUT,
        mem_limit_mb: float = DEFAULT_MEM_MB,
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        fresh: bool = False,
    ) -> CaseResult:
        """Run ``yoloattn <argv>`` (a list) or a Python snippet (a string) as one case."""
        self._n += 1
        out, err = self.workdir / f"case{self._n}.out", self.workdir / f"case{self._n}.err"
        is_code = isinstance(argv_or_code, str)
        what = str(argv_or_code)[:200] if is_code else "yoloattn " + " ".join(map(str, argv_or_code))
        if fresh:
            ans = self._run_fresh(argv_or_code, out, err, timeout, mem_limit_mb, cwd, env)
        else:
            req = {
                "argv": None if is_code else [str(a) for a in argv_or_code],
                "code": argv_or_code if is_code else None,
                "stdout": str(out),
                "stderr": str(err),
                "timeout": timeout,
                "mem_limit_mb": mem_limit_mb,
                "cwd": str(cwd) if cwd is not None else None,
                "env": env,
            }
            proc = self._server()
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            ans = self._readline(timeout + 60)
            if "error" in ans:
                raise RuntimeError(f"hostile case server could not run {what}: {ans['error']}")
        return CaseResult(
            inherited_mb=0.0 if fresh else self.inherited_mb(),
            rc=int(ans["rc"]),
            stdout=out.read_text(errors="replace"),
            stderr=err.read_text(errors="replace"),
            seconds=float(ans["seconds"]),
            peak_mb=float(ans["peak_mb"]),
            timed_out=bool(ans["timed_out"]),
            what=what,
        )

    @staticmethod
    def _run_fresh(
        argv_or_code: Sequence[str] | str,
        out: Path,
        err: Path,
        timeout: float,
        mem_limit_mb: float,
        cwd: str | os.PathLike[str] | None,
        env: dict[str, str] | None,
    ) -> dict:
        if isinstance(argv_or_code, str):
            cmd = [sys.executable, "-c", argv_or_code]
        else:
            cmd = [sys.executable, "-m", "yoloattn.cli", *map(str, argv_or_code)]
        full_env = {**_env(), **(env or {})}
        t0 = time.monotonic()
        with open(out, "w") as fo, open(err, "w") as fe:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=fo,
                stderr=fe,
                cwd=cwd,
                env=full_env,
                start_new_session=True,
                preexec_fn=lambda: _limit_as(_FRESH_AS_MB + mem_limit_mb),  # noqa: PLW1509
            )
            rc, peak, timed_out = _reap(proc.pid, timeout)
            proc.returncode = rc  # reaped by wait4 above
        return {"rc": rc, "peak_mb": peak, "timed_out": timed_out, "seconds": time.monotonic() - t0}

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_RUNNER: CaseRunner | None = None


def run_case(
    argv_or_code: Sequence[str] | str,
    timeout: float = DEFAULT_TIMEOUT,
    mem_limit_mb: float = DEFAULT_MEM_MB,
    **kwargs: object,
) -> CaseResult:
    """Run one case with the process-wide :class:`CaseRunner` (see the module docstring)."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = CaseRunner()
        atexit.register(_RUNNER.close)
    return _RUNNER.run(argv_or_code, timeout, mem_limit_mb, **kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the bar


@dataclass
class Bar:
    """Limits of one case (issue #16: an answer within 60 s and 2 GB)."""

    seconds: float = DEFAULT_TIMEOUT
    peak_mb: float = DEFAULT_MEM_MB
    extra: list[str] = field(default_factory=list)


def _cost_violations(r: CaseResult, bar: Bar) -> list[str]:
    out = []
    if r.timed_out or r.seconds >= bar.seconds:
        out.append(f"took {r.seconds:.1f} s (limit {bar.seconds:.0f} s)")
    if r.fresh_peak_mb >= bar.peak_mb:
        out.append(f"peak memory ~{r.fresh_peak_mb:.0f} MB in a fresh process (limit {bar.peak_mb:.0f} MB)")
    if "Traceback" in r.stderr or "Traceback" in r.stdout:
        out.append("printed a traceback")
    if r.rc < 0:
        out.append(f"killed by signal {-r.rc}")
    return out


def check_refused(r: CaseResult, names: str | os.PathLike[str], bar: Bar | None = None) -> list[str]:
    """Violations of 'refused': non-zero exit, exactly one stderr line, naming ``names``."""
    bar = bar or Bar()
    out = _cost_violations(r, bar)
    if r.rc == 0:
        out.append("exit status 0 for a refused input")
    lines = r.err_lines
    if len(lines) != 1:
        out.append(f"{len(lines)} lines on stderr instead of one")
    if not any(str(names) in ln for ln in lines):
        out.append(f"stderr does not name {names}")
    return out


def check_reported(r: CaseResult, names: str | os.PathLike[str], bar: Bar | None = None) -> list[str]:
    """Violations of 'reported and skipped': exit 0, ``names`` named in the output, no traceback."""
    bar = bar or Bar()
    out = _cost_violations(r, bar)
    if r.rc != 0:
        out.append(f"exit status {r.rc} for an input that is only reported")
    if str(names) not in r.stdout + r.stderr:
        out.append(f"output does not name {names}")
    return out


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    sys.path.insert(0, str(SRC))
    serve()
