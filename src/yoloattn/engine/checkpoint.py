"""Training checkpoints for exact resume, stored as safetensors (no pickle), written atomically,
and the resume itself: :func:`load_resume` reads a run's options and state, :func:`restore_training`
puts the state back into freshly built parts.

One file (:attr:`RunDir.state <yoloattn.engine.runs.RunDir.state>`) holds everything a resume needs:

* tensors: ``model.*`` (raw weights), ``ema.*`` (EMA weights), ``optim.<group>.<param>.<name>``
  (optimizer state), ``rng.torch`` / ``rng.cuda.<i>`` / ``rng.numpy`` (generator states);
* the safetensors metadata entry ``"state"``: JSON with epoch, best fitness, EMA update
  count, optimizer param-group hyperparameters, AMP scaler state and Python's RNG state.

The file is written through :func:`yoloattn._io.atomic_paths` (a temporary name in the same
folder, moved into place with ``os.replace``), so a kill at any moment leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from yoloattn._io import atomic_paths
from yoloattn.engine.runs import RunDir
from yoloattn.engine.train_config import TrainConfig

__all__ = [
    "Resume",
    "ResumePoint",
    "capture_rng",
    "check_unfinished",
    "load_resume",
    "load_training_state",
    "restore_rng",
    "restore_training",
    "save_training_state",
]


def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state().clone()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s.clone()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    py = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
        if states:
            torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    v, state, g = meta["python"]
    random.setstate((v, tuple(state), g))


def _state_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def save_training_state(
    path: str | Path,
    *,
    model: nn.Module,
    ema: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    epoch: int,
    best_fitness: float,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the full resume state atomically (see module docstring for the layout)."""
    tensors = _state_tensors("model", model)
    tensors.update(_state_tensors("ema", ema.ema))
    osd = optimizer.state_dict()
    for pid, st in osd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous().clone()
    scalars = {
        str(pid): {n: v for n, v in st.items() if not isinstance(v, torch.Tensor)}
        for pid, st in osd["state"].items()
    }
    rng_t, rng_meta = capture_rng()
    tensors.update(rng_t)
    state = {
        "epoch": epoch,
        "best_fitness": best_fitness,
        "ema_updates": ema.updates,
        "param_groups": osd["param_groups"],
        "optim_scalars": scalars,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": rng_meta,
        "extra": extra or {},
    }
    metadata = {"format": "yoloattn-train-state-1", "state": json.dumps(state)}
    with atomic_paths(path) as (tmp,):
        save_file(tensors, str(tmp), metadata=metadata)


def load_training_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state file: returns (tensors, state dict)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}; was the run started with this version?")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "yoloattn-train-state-1":
        raise ValueError(f"{path} is not a yoloattn training-state file")
    return load_file(str(path)), json.loads(meta["state"])


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], state: dict
) -> None:
    per: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, name = k.split(".", 2)
            per.setdefault(int(pid), {})[name] = v
    for pid, sc in state["optim_scalars"].items():
        per.setdefault(int(pid), {}).update(sc)
    optimizer.load_state_dict({"state": per, "param_groups": state["param_groups"]})


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    p = prefix + "."
    return {k[len(p) :]: v for k, v in tensors.items() if k.startswith(p)}


# ------------------------------------------------------------------------------------- resume
#: the options a resume takes from the command that resumes (everything else is the run's own)
RESUME_OPTIONS = ("stop_after_epochs", "quiet", "device", "workers", "threads")


@dataclass
class Resume:
    """A run to continue: its saved options, its folder and its training state."""

    cfg: TrainConfig
    run: RunDir
    tensors: dict[str, torch.Tensor]
    state: dict[str, Any]

    @property
    def extra(self) -> dict[str, Any]:
        """What the trainer saved beside the state (frozen rows, patience counter, metrics...)."""
        return dict(self.state.get("extra", {}))


def load_resume(cfg: TrainConfig) -> Resume:
    """Read the run ``cfg.resume`` names (its folder, or its state file).

    The options are the run's own (``args.yaml``); of ``cfg`` only :data:`RESUME_OPTIONS` apply
    (``device`` only when given). Raises ``FileNotFoundError`` with a clear message when the
    folder is no run, or the run stopped before its first checkpoint.
    """
    target = Path(str(cfg.resume))
    if not target.exists():
        raise FileNotFoundError(
            f"--resume {target}: no such run folder (nothing there, no args.yaml); pass a run folder "
            "such as runs/train/exp3, or --resume alone for the newest run under --project"
        )
    state_file = RunDir(target).state if target.is_dir() else target
    run = RunDir.of_state(state_file)
    if not run.args_yaml.is_file():
        raise FileNotFoundError(f"cannot resume: {run.args_yaml} not found (is {target} a run folder?)")
    saved = yaml.safe_load(run.args_yaml.read_text())
    keep = {k: getattr(cfg, k) for k in RESUME_OPTIONS}
    keep["device"] = cfg.device or saved.get("device", "")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    new = TrainConfig(**{k: v for k, v in saved.items() if k in names})
    new.__dict__.update(keep)
    new.resume = str(state_file)
    if not state_file.is_file():
        raise FileNotFoundError(
            f"cannot resume {run.root}: it has no checkpoint ({state_file} is missing), so it stopped "
            "before its first epoch finished; start the training again with the same command"
        )
    tensors, state = load_training_state(state_file)
    return Resume(new, run, tensors, state)


def resume_epoch(resume: Resume) -> int:
    """The (0-based) epoch a resume continues with: the one after the last checkpointed epoch."""
    return int(resume.state["epoch"]) + 1


def check_unfinished(resume: Resume, epochs: int) -> None:
    """Raise ``ValueError`` when the run already finished all ``epochs`` (cheap: the trainer calls
    it before any dataset is scanned)."""
    if resume_epoch(resume) >= epochs:
        raise ValueError(f"run {resume.run.root} already finished all {epochs} epochs; nothing to resume")


@dataclass
class ResumePoint:
    """Where the loop continues after :func:`restore_training`."""

    start_epoch: int
    best_fitness: float
    last_opt_step: int  # global iteration of the last optimizer step
    bad_epochs: int  # validations without improvement (--patience)
    extra: dict[str, Any]
    rng: tuple[dict[str, torch.Tensor], dict[str, Any]]  # for restore_rng, when the loop starts


def restore_training(
    resume: Resume,
    *,
    model: nn.Module,
    ema: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    epochs: int,
) -> ResumePoint:
    """Load the saved weights, EMA, optimizer, AMP scaler and schedule position into the freshly
    built parts. Raises ``ValueError`` when the run already finished all ``epochs``."""
    tensors, state = resume.tensors, resume.state
    model.load_state_dict(split_prefix(tensors, "model"), strict=True)
    if ema is not None:
        ema.ema.load_state_dict(split_prefix(tensors, "ema"), strict=True)
        ema.updates = state["ema_updates"]
    restore_optimizer(optimizer, tensors, state)
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    start_epoch = resume_epoch(resume)
    extra = resume.extra
    # the in-process loop has stepped the scheduler once per finished epoch (plus the step
    # LambdaLR takes at construction), so the next step must give lf(start_epoch + 1)
    scheduler.last_epoch = start_epoch
    check_unfinished(resume, epochs)
    return ResumePoint(
        start_epoch=start_epoch,
        best_fitness=state["best_fitness"],
        last_opt_step=int(extra.get("last_opt_step", -1)),
        bad_epochs=int(extra.get("bad_epochs", 0)),
        extra=extra,
        rng=(tensors, state["rng"]),
    )
