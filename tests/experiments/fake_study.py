"""A study without training: ``train`` and ``evaluate_run`` faked, so ``run_compare`` takes seconds.

The fake ``train`` writes a run folder (weights, ``args.yaml``, ``metrics_start.json``); with
``real_weights`` the weights are an untrained model of the variant's real architecture and the run
has a ``results.csv`` (as ``--noval`` writes it: metrics only in the last epoch), so the report can
explain images and draw curves, and its attention variants report an engagement. The fake
``evaluate_run`` writes simulated match records whose quality per variant is :data:`QUALITY`.
Used by the fixtures ``fake`` and ``fake_weights``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from yoloattn.engine.records import map_from_records, simulate_records
from yoloattn.engine.runs import RESULT_COLUMNS, write_results_row

N_IMG = 60
LABELS = simulate_records(N_IMG, nc=2, rng=0)
#: how well each fake variant detects: se clearly better than the baseline, cbam the same
QUALITY = {"baseline": 0.6, "se@neck": 0.95, "cbam@neck": 0.6}
EPOCHS = 2


def _save_real_weights(tc: Any, path: Path) -> None:
    from yoloattn.models import build_model
    from yoloattn.models.placement import expand_config
    from yoloattn.models.weights import save_model

    placed = expand_config(tc.model, tc.attention or None)
    model = build_model(placed.cfg, nc=2)
    model.names = ["c0", "c1"]
    save_model(model, path, meta={"imgsz": tc.imgsz})


def _write_results(run: Path, seed: int) -> None:
    for epoch in range(EPOCHS):
        last = epoch == EPOCHS - 1
        loss = [0.1 - 0.01 * epoch - 0.002 * seed] * 3
        metrics = [0.5, 0.4, 0.3 + 0.01 * seed, 0.2] if last else [None] * 4  # --noval: empty cells
        vloss = [0.05] * 3 if last else [None] * 3
        values = [*loss, *metrics, *vloss, 0.01, 0.01, 0.01]
        assert len(values) == len(RESULT_COLUMNS) - 1
        write_results_row(run / "results.csv", epoch, values)


def install_fakes(monkeypatch: Any, real_weights: bool = False) -> list[tuple[str, int]]:
    """Patch train, evaluate_run and the architecture figures; returns the (variant, seed) trained."""
    from yoloattn.experiments import report

    calls: list[tuple[str, int]] = []

    def fake_train(tc):
        d = Path(tc.project) / tc.name
        (d / "weights").mkdir(parents=True, exist_ok=True)
        if real_weights:
            _save_real_weights(tc, d / "weights" / "last.safetensors")
            _write_results(d, tc.seed)
        else:
            (d / "weights" / "last.safetensors").write_bytes(b"w")
        (d / "weights" / "last.state.safetensors").write_bytes(b"s" * 4096)
        (d / "args.yaml").write_text("insert_resolved: identity\n")
        (d / "metrics_start.json").write_text(json.dumps({"map50": 0.5, "map": 0.3}))
        calls.append((d.name.rsplit("-s", 1)[0], tc.seed))

    def fake_evaluate_run(
        weights, data, imgsz=640, device="", single_cls=False, engagement=None, records=None
    ):
        run = Path(weights).parent.parent.name
        variant, seed = run.rsplit("-s", 1)
        rng = 1000 * int(seed) + sorted(QUALITY).index(variant)
        rec = simulate_records(
            N_IMG,
            nc=2,
            rng=rng,
            detect_rate=QUALITY[variant],
            labels=(LABELS.target_cls, LABELS.target_img),
        )
        if records is not None:
            rec.save(records)
        if real_weights and engagement is not None and variant != "baseline":
            engagement.update({17: {"contribution": 0.1 + 0.01 * int(seed), "gate": [0.25], "images": N_IMG}})
        m50, m, _ = map_from_records(rec)
        return {"map50": m50, "map": m, "coco_ap": m, "images": N_IMG, "instances": rec.n_targets}

    monkeypatch.setattr("yoloattn.engine.trainer.train", fake_train)
    monkeypatch.setattr("yoloattn.engine.evaluator.evaluate_run", fake_evaluate_run)
    monkeypatch.setattr(
        report,
        "architecture_figures",
        lambda cfg, vs: {
            v.name: {"params": 1000 + i, "gflops": 1.0 + 0.005 * i, "latency_ms": 5.0 + i}
            for i, v in enumerate(vs)
        },
    )
    return calls
