"""Overfit check: yolov5n at 320 px on 16 raccoon images must fit them (mAP50 > 0.9).

A working pipeline (data, loss, optimiser, NMS, metrics) can memorise 16 images; a broken
one cannot. Trains with every augmentation off except small random shifts (``--translate``,
default 0.1), evaluates on the same 16 images every few epochs and stops once mAP50 passes the
target. Prints mAP50 and training throughput (images/s).

Two views of "the same images" are evaluated:

* ``fit``: the geometry the model was trained on (square letterbox, no rect batches).
* ``val``: the evaluator's standard geometry (rect batches padded by half a stride, as
  ``yoloattn val`` and the official val.py do): 352x352 here.

By default both must pass (``--stop-on both``). With ``--translate 0`` the model also memorises
*where* each object sits in the 320x320 canvas, and the 16 px shift of the rect canvas (half a
cell of the P5 grid) makes the confidences of some images collapse: the fit view reaches 0.995
while the val view stays near 0.4-0.85. That is memorisation, not a pipeline fault.

Usage: python benchmarks/overfit.py [--data ../shared/datasets/raccoon/raccoon.yaml]
       [--images 16] [--imgsz 320] [--max-epochs 300] [--target 0.9] [--threads 2]
       [--translate 0.1] [--stop-on both|fit|val]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
NO_AUG = dict(
    mosaic=0.0,
    mixup=0.0,
    hsv_h=0.0,
    hsv_s=0.0,
    hsv_v=0.0,
    fliplr=0.0,
    flipud=0.0,
    translate=0.0,
    scale=0.0,
    degrees=0.0,
    shear=0.0,
    perspective=0.0,
    warmup_epochs=0.0,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "raccoon" / "raccoon.yaml"))
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--max-epochs", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr0", type=float, default=0.01)
    ap.add_argument("--repeat", type=int, default=4, help="list each image this many times per epoch")
    ap.add_argument("--translate", type=float, default=0.1, help="random shift augmentation (fraction)")
    ap.add_argument(
        "--stop-on", choices=("both", "fit", "val"), default="both", help="view(s) that must pass"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from yoloattn.data import YoloDataset, build_dataloader, load_dataset_config
    from yoloattn.data.scan import find_images
    from yoloattn.engine.evaluator import build_val_loader, evaluate
    from yoloattn.engine.trainer import TrainConfig, Trainer

    dcfg = load_dataset_config(args.data)
    images = sorted(find_images(dcfg.train)[0])[: args.images]
    tmp = Path(tempfile.mkdtemp(prefix="overfit-"))
    (tmp / "list.txt").write_text("\n".join(str(p) for p in images) + "\n")
    (tmp / "train.txt").write_text("\n".join(str(p) for p in images * args.repeat) + "\n")
    (tmp / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "train": str(tmp / "train.txt"),
                "val": str(tmp / "list.txt"),
                "nc": dcfg.nc,
                "names": list(dcfg.names),
            }
        )
    )
    cfg = TrainConfig(
        model="yolov5n",
        data=str(tmp / "data.yaml"),
        epochs=args.max_epochs,
        batch=args.images,
        imgsz=args.imgsz,
        workers=0,
        seed=0,
        project=str(tmp / "runs"),
        name="overfit",
        noval=True,
        quiet=True,
        nbs=args.images,
        hyp_overrides={**NO_AUG, "lr0": args.lr0, "translate": args.translate},
        cache_dir=str(tmp / "cache"),
        lr_schedule="linear",
    )
    t = Trainer(cfg)
    t.setup()
    _, val_loader = build_val_loader(
        str(tmp / "data.yaml"), args.imgsz, args.images, t.gs, cache_dir=str(tmp / "cache")
    )
    fit_set = YoloDataset(
        [str(tmp / "list.txt")],
        imgsz=args.imgsz,
        augment=False,
        rect=False,
        batch_size=args.images,
        stride=t.gs,
        cache_dir=str(tmp / "cache"),
        nc=dcfg.nc,
    )
    fit_loader = build_dataloader(fit_set, args.images, shuffle=False, workers=0, seed=0)
    loaders = {"fit": fit_loader, "val": val_loader}
    nb = len(t.train_loader)
    seen, train_time, epoch, passed = 0, 0.0, 0, False
    t0 = time.time()
    for epoch in range(args.max_epochs):
        t.model.train()
        t.train_loader.set_epoch(epoch)
        s = time.perf_counter()
        t._train_epoch(epoch, nb, 0)
        train_time += time.perf_counter() - s
        seen += len(t.train_set)
        t.scheduler.step()
        if (epoch + 1) % args.eval_every == 0 or epoch + 1 == args.max_epochs:
            res = {
                view: evaluate(t.ema.ema, dl, list(dcfg.names), t.device, verbose=False, coco=False).metrics
                for view, dl in loaders.items()
            }
            print(
                f"epoch {epoch + 1:4d}  "
                + "  ".join(f"{v}: mAP50 {m['map50']:.4f} mAP50-95 {m['map']:.4f}" for v, m in res.items())
                + f"  {seen / train_time:.1f} img/s  {time.time() - t0:.0f} s",
                flush=True,
            )
            views = ("fit", "val") if args.stop_on == "both" else (args.stop_on,)
            passed = all(res[v]["map50"] > args.target for v in views)
            if passed:
                break
    ok = "PASS" if passed else "FAIL"
    print(
        f"{ok}: mAP50 {res['fit']['map50']:.4f} (fit view), {res['val']['map50']:.4f} (val view) on the "
        f"{len(images)} training images after {epoch + 1} epochs, {time.time() - t0:.0f} s in all, "
        f"training throughput {seen / train_time:.1f} images/s ({args.threads} threads, {args.imgsz} px, "
        f"translate {args.translate})"
    )


if __name__ == "__main__":
    main()
