"""``yoloattn compare``: an ablation study (baseline vs attention modules x seeds) in one command.

Without ``--data`` and ``--weights`` it runs the bundled demo: yolov5n fine-tuned from the demo
weights on the demo raccoon data at 320 px, baseline vs se, cbam, bam, 2 seeds each.

Examples::

    yoloattn compare                                   # the demo (a few minutes on a laptop CPU)
    yoloattn compare --model yolov5s --data data.yaml --attention se,cbam,bam,eca,ca --seeds 3 --epochs 100
    yoloattn compare --data data.yaml --attention cbam@backbone,se --place neck --weights base.safetensors
    yoloattn compare --data data.yaml --attention se,cbam --launcher submitit --slurm-gpus 1 --dry-run

Rerunning a study (same --name) reuses its finished runs; more --seeds or --attention variants
only add runs. A rerun whose result-changing options differ is refused: use --name NEW, or
--fresh to discard the old study.
"""

from __future__ import annotations

import argparse
from typing import Any

from yoloattn.cli._options import HelpFormatter
from yoloattn.cli.train import add_train_options, train_options
from yoloattn.engine.train_config import TrainConfig

DEMO_HYP = {"warmup_epochs": 0.0, "lr0": 0.005, "mosaic": 0.0}
DEMO: dict[str, Any] = {
    "model": "yolov5n",
    "attention": "se,cbam,bam",
    "seeds": 2,
    "epochs": 4,
    "imgsz": 320,
    "name": "demo",
}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="ablation: baseline vs attention modules x seeds",
        description=__doc__,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", default=None, help="base model (default yolov5s; demo: yolov5n)")
    p.add_argument("--data", default=None, help="dataset YAML (omit with --weights for the demo)")
    p.add_argument("--attention", default=None, help="comma-separated modules, each optionally key@place")
    p.add_argument("--place", default="neck", help="default placement: neck, backbone, all or rows like 6+8")
    p.add_argument("--seeds", type=int, default=None, help="seeds per variant (default 3; demo 2)")
    p.add_argument("--weights", default=None, help="base weights every variant starts from")
    p.add_argument("--project", default="runs/compare", help="folder of the study folders")
    p.add_argument(
        "--name", default=None, help="study folder name (default exp; demo: demo); rerun to resume"
    )
    p.add_argument(
        "--launcher",
        choices=["local", "submitit"],
        default="local",
        help="run the variants here, or as a SLURM job array",
    )
    g = p.add_argument_group(
        "SLURM (--launcher submitit)", "what each array task asks for; see docs/cluster.md"
    )
    g.add_argument("--slurm-partition", default=None, help="partition (default: the cluster's default)")
    g.add_argument(
        "--slurm-time", default="24:00:00", help="time limit per task: minutes, H:MM:SS or D-HH:MM:SS"
    )
    g.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per task (0: none requested)")
    g.add_argument("--slurm-cpus", type=int, default=None, help="CPUs per task (default: the cluster's)")
    g.add_argument("--slurm-mem", default=None, help="memory per task, e.g. 32G (default: the cluster's)")
    g.add_argument(
        "--slurm-job-name", default="yoloattn", help="job-name prefix: jobs are named PREFIX-<study name>"
    )
    g.add_argument("--slurm-parallel", type=int, default=None, help="at most this many tasks at once")
    g.add_argument(
        "--slurm-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. account=mylab or qos=high (repeatable)",
    )
    g.add_argument(
        "--dry-run",
        action="store_true",
        help="print the runs to submit, the sbatch line and the batch script; submit nothing",
    )
    p.add_argument("--latency-runs", type=int, default=20, help="CPU latency repetitions per variant")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard the existing study of this --name first (a rerun with other options is refused)",
    )
    p.add_argument(
        "--keep-state",
        action="store_true",
        help="keep finished runs' resume state (weights/last.state.safetensors; deleted by default)",
    )
    p.add_argument(
        "--resamples", type=int, default=1000, help="bootstrap resamples for the summary's intervals"
    )
    p.add_argument(
        "--report-images",
        type=int,
        default=3,
        metavar="K",
        help="validation images explained (detections, heatmaps) per variant in report.html; 0: none",
    )
    add_train_options(p)
    p.set_defaults(imgsz=None)  # unset: 640, or the demo's 320
    return p


def slurm_options(args: argparse.Namespace) -> Any:
    """The ``--slurm-*`` options as a :class:`~yoloattn.experiments.slurm.SlurmOptions`."""
    from yoloattn.experiments.slurm import SlurmOptions, parse_time

    parse_time(args.slurm_time)  # a bad value stops here, not at submission
    extra: dict[str, str] = {}
    for item in args.slurm_opt:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--slurm-opt {item!r}: use KEY=VALUE, e.g. account=mylab")
        extra[key.strip().lstrip("-").replace("-", "_")] = value.strip()
    return SlurmOptions(
        partition=args.slurm_partition,
        time=args.slurm_time,
        gpus_per_task=args.slurm_gpus,
        cpus_per_task=args.slurm_cpus,
        mem=args.slurm_mem,
        job_name=args.slurm_job_name,
        max_parallel=args.slurm_parallel,
        extra=extra,
    )


def run(args: argparse.Namespace) -> int:
    from yoloattn.experiments.compare import CompareConfig, plan_slurm, run_compare

    demo = args.data is None and args.weights is None
    if demo:
        from yoloattn.demo import demo_data, demo_weights

        data, weights = str(demo_data()), str(demo_weights())
        print(f"demo: {DEMO['model']} on the bundled raccoon data ({data}), fine-tuned from {weights}")
    else:
        if not args.data:
            raise ValueError("--data is required when --weights is given")
        data, weights = args.data, args.weights
    pick = lambda v, k, default: v if v is not None else (DEMO[k] if demo else default)  # noqa: E731
    train_opts = train_options(args)
    if demo:
        train_opts.update(epochs=pick(args.epochs, "epochs", 100), imgsz=pick(args.imgsz, "imgsz", 640))
    if demo and not args.hyp_overrides:
        # a short fine-tune: no warmup, a smaller lr, no mosaic, one optimizer step per batch
        # (docs/demo.md)
        train_opts["hyp_overrides"] = dict(DEMO_HYP)
        if args.nbs == TrainConfig.nbs:
            train_opts["nbs"] = train_opts["batch"]
    if demo:
        train_opts["noval"] = True  # evaluate once, after the last epoch (compare does that anyway)
    cfg = CompareConfig(
        model=pick(args.model, "model", "yolov5s"),
        data=data,
        attention=(pick(args.attention, "attention", "") or "").split(","),
        place=args.place,
        seeds=pick(args.seeds, "seeds", 3),
        weights=weights,
        project=args.project,
        name=pick(args.name, "name", "exp"),
        launcher=args.launcher,
        train=train_opts,
        latency_runs=args.latency_runs,
        fresh=args.fresh,
        keep_state=args.keep_state,
        n_resamples=args.resamples,
        slurm=slurm_options(args),
        report_images=args.report_images,
    )
    if args.dry_run:
        if args.launcher != "submitit":
            raise ValueError("--dry-run shows what --launcher submitit would submit; add --launcher submitit")
        print(plan_slurm(cfg))
        return 0
    root = run_compare(cfg)
    print(
        f"\nsummary: {root / 'summary.md'}, report: {root / 'report.html'} "
        "(also summary.csv, summary.json, per_class.csv, forest.png, map_bar.png, map_vs_gflops.png, "
        "map_vs_latency.png, curves.png)"
    )
    return 0
