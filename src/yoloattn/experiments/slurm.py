"""SLURM job arrays through submitit: the options, the ``sbatch`` view, submission and waiting.

:func:`run_array` submits one call per task as a job array and waits for every task **without
accounting**: a task is finished when submitit's result file exists, and ended without a result
(cancelled, timed out, killed, node failure) when it has left ``squeue`` with no result file for
``grace_s`` seconds. (submitit's own waiting asks ``sacct``, which hangs on clusters without
accounting.) The job id of every submitted run is recorded in ``<folder>/jobs.json``, so a rerun
attaches to tasks that are still queued or running instead of submitting them twice.

Nothing here knows about studies: :mod:`yoloattn.experiments.compare` passes the function and its
arguments. ``submitit`` is imported lazily (the optional ``cluster`` extra).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yoloattn._io import write_text_atomic

LOGGER = logging.getLogger("yoloattn.slurm")

__all__ = ["SlurmOptions", "TaskOutcome", "parse_time", "run_array", "sbatch_view", "check_slurm"]


@dataclass
class SlurmOptions:
    """What each array task asks SLURM for (``sbatch`` option in brackets)."""

    partition: str | None = None  # --partition (None: the cluster's default partition)
    time: str = "24:00:00"  # --time: minutes, H:MM:SS, D-HH or D-HH:MM[:SS]
    gpus_per_task: int = 0  # --gpus-per-task (0: no GPU requested)
    cpus_per_task: int | None = None  # --cpus-per-task (None: the cluster default, usually 1)
    mem: str | None = None  # --mem, e.g. 32G (None: the cluster default)
    job_name: str = "yoloattn"  # --job-name prefix: the job is named <prefix>-<study name>
    max_parallel: int | None = None  # at most this many tasks at once (--array=0-N%K)
    extra: dict[str, str] = field(default_factory=dict)  # any other sbatch option: {"account": "lab"}
    poll_s: float = 5.0  # seconds between two looks at squeue
    grace_s: float = 10.0  # a task absent from squeue this long without a result has ended without one


@dataclass
class TaskOutcome:
    """One array task: ``result`` when it returned, else ``error`` (one line) and ``log``."""

    job_id: str
    result: Any = None
    error: str | None = None
    log: str | None = None


def parse_time(spec: str | int) -> int:
    """An ``sbatch --time`` value in minutes (seconds round up): ``90``, ``1:30:00``, ``2-12``..."""
    s = str(spec).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m or not s:
        raise ValueError(f"--slurm-time {spec!r}: use minutes, H:MM:SS, D-HH or D-HH:MM:SS")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # H:MM:SS
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        secs = int(a) * 60 + int(b)
    else:  # minutes
        secs = int(a) * 60
    if secs <= 0:
        raise ValueError(f"--slurm-time {spec!r} must be positive")
    return -(-secs // 60)


class LauncherError(ValueError):
    """The chosen launcher cannot run here (missing package or cluster)."""


def check_slurm(need_sbatch: bool = True) -> None:
    """Raise :class:`LauncherError` with the way out when submitit (or ``sbatch``) is missing."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise LauncherError(
            "--launcher submitit needs the optional extra: pip install 'yoloattn[cluster]'"
        ) from None
    if need_sbatch and shutil.which("sbatch") is None:
        raise LauncherError(
            "--launcher submitit needs a SLURM cluster: `sbatch` is not on PATH here. "
            "Run on a SLURM login node, or use --launcher local."
        )


def _executor(folder: Path, opts: SlurmOptions, name: str, n: int) -> Any:
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=3)
    params: dict[str, Any] = {
        "time": parse_time(opts.time),
        "job_name": f"{opts.job_name}-{name}" if name else opts.job_name,
        "array_parallelism": min(n, opts.max_parallel or n),
    }
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_task:
        params["gpus_per_task"] = opts.gpus_per_task
    if opts.cpus_per_task:
        params["cpus_per_task"] = opts.cpus_per_task
    if opts.mem:
        params["mem"] = opts.mem
    if opts.extra:
        params["additional_parameters"] = dict(opts.extra)
    ex.update_parameters(**params)
    return ex


def sbatch_view(folder: Path, opts: SlurmOptions, name: str, n: int) -> str:
    """The batch script submitit submits for an ``n``-task array with these options (what
    ``sbatch`` receives; ``%A_%a`` are the array and task ids)."""
    from submitit.slurm.slurm import _make_sbatch_string

    ex = _executor(folder, opts, name, max(n, 1))
    text: str = _make_sbatch_string(
        command=ex._submitit_command_str, folder=ex.folder, map_count=max(n, 1), **ex.parameters
    )
    return text


_RUNNING = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
            "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"}  # fmt: skip
_ENDED = {
    "CANCELLED": "cancelled (scancel, or by the cluster)",
    "TIMEOUT": "time limit reached (--slurm-time)",
    "DEADLINE": "time limit reached (--slurm-time)",
    "OUT_OF_MEMORY": "killed for exceeding its memory (--slurm-mem)",
    "NODE_FAIL": "node failure",
    "BOOT_FAIL": "node failure",
    "PREEMPTED": "preempted",
    "FAILED": "failed",
    "COMPLETED": "ended without a result",
}


def _squeue(ids: Sequence[str]) -> dict[str, str] | None:
    """``{task id (A_i): state}`` for the tasks of ``ids``' arrays that slurmctld still knows
    (ended tasks stay listed for MinJobAge, 5 min by default); None when squeue does not answer."""
    arrays = sorted({i.split("_")[0] for i in ids})
    if not arrays:
        return {}
    cmd = ["squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(arrays)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        LOGGER.warning("squeue failed (%s); retrying", e)
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every array has left the controller's memory
            return {}
        LOGGER.warning("squeue failed: %s", out.stderr.strip()[:200])
        return None
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


_END = re.compile(
    r"\*\*\* (?:JOB|STEP) \S+ (?:ON \S+ )?(CANCELLED|DUE TO TIME LIMIT|DUE TO PREEMPTION|DUE TO NODE FAILURE)"
)


def _ended_reason(state: str | None, log: Path) -> str:
    """Why a task ended without a result: its final SLURM state, else its log's last words."""
    if state in _ENDED:
        return _ENDED[state]
    text = log.read_text(errors="replace")[-20000:] if log.is_file() else ""
    m = list(_END.finditer(text))
    if m:
        key = {"CANCELLED": "CANCELLED", "DUE TO TIME LIMIT": "TIMEOUT", "DUE TO PREEMPTION": "PREEMPTED",
               "DUE TO NODE FAILURE": "NODE_FAIL"}[m[-1].group(1)]  # fmt: skip
        return _ENDED[key]
    if "oom" in text.lower() and "kill" in text.lower():
        return _ENDED["OUT_OF_MEMORY"]
    return "ended without a result (cancelled, timed out or killed)"


def _last_exception_line(text: str) -> str:
    """``KeyError: 'x'`` from submitit's failure message (the task's traceback, then the logs)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b.*", ln)]
    return found[-1] if found else (lines[0] if lines else "the task failed")


def _load_jobs(folder: Path) -> dict[str, str]:
    f = folder / "jobs.json"
    try:
        data = json.loads(f.read_text()) if f.is_file() else {}
    except ValueError:
        data = {}
    return {str(k): str(v) for k, v in data.items()}


def run_array(
    fn: Callable[..., Any],
    tasks: dict[str, tuple[Any, ...]],
    folder: Path,
    opts: SlurmOptions,
    name: str = "",
    on_outcome: Callable[[str, TaskOutcome], None] | None = None,
) -> dict[str, TaskOutcome]:
    """Run ``fn(*args)`` for every ``key: args`` of ``tasks`` as one SLURM job array; wait for all.

    Keys name the tasks in ``<folder>/jobs.json``: a key whose recorded task is still queued or
    running is attached to, not submitted again. Returns the outcome of every key.
    """
    check_slurm()
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    recorded = _load_jobs(folder)
    alive = _squeue(list(recorded.values())) if recorded else {}
    jobs: dict[str, Any] = {}
    for key in tasks:
        jid = recorded.get(key)
        if jid and alive is not None and alive.get(jid) in _RUNNING:
            jobs[key] = submitit.SlurmJob(folder=str(folder), job_id=jid)
            LOGGER.info("%s: attached to job %s (still queued or running)", key, jid)
    todo = [k for k in tasks if k not in jobs]
    if todo:
        ex = _executor(folder, opts, name, len(todo))
        with ex.batch():  # one job array
            submitted = [ex.submit(fn, *tasks[k]) for k in todo]
        for k, j in zip(todo, submitted):
            jobs[k] = j
        array_id = submitted[0].job_id.split("_")[0]
        LOGGER.info("submitted job array %s: %d task(s), logs in %s", array_id, len(todo), folder)
    recorded.update({k: j.job_id for k, j in jobs.items()})
    write_text_atomic(folder / "jobs.json", json.dumps(recorded, indent=2))

    outcomes: dict[str, TaskOutcome] = {}
    ended_since: dict[str, float] = {}
    while len(outcomes) < len(jobs):
        states = _squeue([j.job_id for k, j in jobs.items() if k not in outcomes])
        now = time.monotonic()
        for key, job in jobs.items():
            if key in outcomes:
                continue
            stderr = Path(job.paths.stderr)
            log = str(stderr) if stderr.is_file() else None
            out: TaskOutcome | None = None
            if job.paths.result_pickle.exists():
                try:
                    out = TaskOutcome(job.job_id, result=job.result(), log=log)
                except Exception as e:  # the task raised: submitit re-raises it here with its traceback
                    out = TaskOutcome(job.job_id, error=_last_exception_line(str(e)), log=log)
            elif states is not None and states.get(job.job_id) not in _RUNNING:
                # ended (or forgotten by the controller) without a result file: allow for a slow
                # shared file system before calling it a failure
                first = ended_since.setdefault(key, now)
                if now - first >= opts.grace_s and not job.paths.result_pickle.exists():
                    reason = _ended_reason(states.get(job.job_id), stderr)
                    if log is None:
                        reason += "; it never started (no log)"
                    out = TaskOutcome(job.job_id, error=reason, log=log)
            else:
                ended_since.pop(key, None)
            if out is not None:
                outcomes[key] = out
                if on_outcome:
                    on_outcome(key, out)
        if len(outcomes) < len(jobs):
            time.sleep(opts.poll_s)
    return outcomes


def sbatch_command_line(opts: SlurmOptions, name: str, n: int) -> str:
    """The one-line ``sbatch`` equivalent of the array's resource request (for messages)."""
    parts = [
        "sbatch",
        f"--array=0-{n - 1}%{min(n, opts.max_parallel or n)}",
        f"--time={parse_time(opts.time)}",
    ]
    parts.append(f"--job-name={opts.job_name}-{name}" if name else f"--job-name={opts.job_name}")
    if opts.partition:
        parts.append(f"--partition={opts.partition}")
    if opts.gpus_per_task:
        parts.append(f"--gpus-per-task={opts.gpus_per_task}")
    if opts.cpus_per_task:
        parts.append(f"--cpus-per-task={opts.cpus_per_task}")
    if opts.mem:
        parts.append(f"--mem={opts.mem}")
    parts += [f"--{k.replace('_', '-')}={v}" for k, v in opts.extra.items()]
    return " ".join(shlex.quote(p) for p in parts)
