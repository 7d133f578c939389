"""Per-image match records: everything needed to recompute YOLO-style mAP without new inference.

Validation reduces every image to four small arrays (the evaluator's per-image stats):

* ``tp`` ``bool [n_pred, T]``: prediction ``j`` is a true positive at IoU threshold ``iouv[t]``
  (``T = 10`` thresholds 0.50:0.05:0.95), as decided by the official matching
  (:func:`yoloattn.engine.metrics.match_predictions`, or its YOLOv7 form);
* ``conf`` ``[n_pred]`` and ``pred_cls`` ``[n_pred]``;
* ``target_cls`` ``[n_gt]``.

:class:`MatchRecords` holds their concatenation over a validation set with, for every prediction
and every label, the index of its image. From it :func:`map_from_records` recomputes mAP@0.5,
mAP@0.5:0.95 and the per-class AP exactly as :func:`yoloattn.engine.metrics.ap_per_class` and
``DetMetrics.compute`` do, optionally with per-image *multiplicities* ``weights`` (a bootstrap
resample: image ``i`` counted ``weights[i]`` times). An integer weight is the same as physically
repeating the image (its predictions and labels) that many times; a zero weight drops it.

Records are saved as a compressed ``.npz`` (no pickle) through :func:`yoloattn._io.atomic_paths`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from yoloattn._io import atomic_paths
from yoloattn.engine.metrics import IOUV, compute_ap, match_predictions, match_predictions_v7

__all__ = [
    "RECORDS_VERSION",
    "ImageStats",
    "MatchRecords",
    "image_record",
    "map_from_records",
    "records_from_stats",
    "simulate_records",
]

#: Format version written into every saved file (bumped on incompatible changes).
RECORDS_VERSION = 1

#: One image's stats, as ``DetMetrics`` accumulates them: ``(tp [n, T], conf [n], pred_cls [n],
#: target_cls [m])``.
ImageStats = tuple[Any, Any, Any, Any]

_EPS = 1e-16  # the guard ap_per_class adds to the label counts


def _i64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).reshape(-1), dtype=np.int64)


@dataclass(frozen=True, eq=False)
class MatchRecords:
    """Match records of one model on one validation set (see the module docstring).

    Attributes:
        tp: ``bool [N, T]`` TP flags of all predictions at the thresholds ``iouv``.
        conf: ``float64 [N]`` confidences.
        pred_cls: ``int64 [N]`` predicted classes.
        pred_img: ``int64 [N]`` image index (``0 .. n_images - 1``) of every prediction.
        target_cls: ``int64 [M]`` label classes.
        target_img: ``int64 [M]`` image index of every label.
        n_images: number of validation images (images without predictions or labels count: a
            bootstrap draws them too).
        nc: number of classes of the dataset.
        iouv: ``float64 [T]`` the IoU thresholds (column ``0`` is the mAP@0.5 one).
        end_recall_one: the AP end sentinel (YOLOv5 and ``--v5-metric``: True; YOLOv7: False).
    """

    tp: np.ndarray
    conf: np.ndarray
    pred_cls: np.ndarray
    pred_img: np.ndarray
    target_cls: np.ndarray
    target_img: np.ndarray
    n_images: int
    nc: int
    iouv: np.ndarray = field(default_factory=lambda: IOUV.double().numpy())
    end_recall_one: bool = True

    def __post_init__(self) -> None:
        tp = np.asarray(self.tp)
        if tp.ndim == 1:
            tp = tp[:, None]
        iouv = np.ascontiguousarray(np.asarray(self.iouv, dtype=np.float64).reshape(-1))
        if tp.ndim != 2 or tp.shape[1] != iouv.size:
            raise ValueError(f"MatchRecords: tp must be [N, {iouv.size}] (one column per IoU threshold)")
        conf = np.ascontiguousarray(np.asarray(self.conf, dtype=np.float64).reshape(-1))
        arrays = {
            "tp": np.ascontiguousarray(tp, dtype=bool),
            "conf": conf,
            "pred_cls": _i64(self.pred_cls),
            "pred_img": _i64(self.pred_img),
            "target_cls": _i64(self.target_cls),
            "target_img": _i64(self.target_img),
            "iouv": iouv,
        }
        for k, v in arrays.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "n_images", int(self.n_images))
        object.__setattr__(self, "nc", int(self.nc))
        object.__setattr__(self, "end_recall_one", bool(self.end_recall_one))
        self._validate()

    def _validate(self) -> None:
        n = self.tp.shape[0]
        if not (self.conf.size == self.pred_cls.size == self.pred_img.size == n):
            raise ValueError(
                f"MatchRecords: tp, conf, pred_cls and pred_img must agree in length, got {n}, "
                f"{self.conf.size}, {self.pred_cls.size}, {self.pred_img.size}"
            )
        if self.target_cls.size != self.target_img.size:
            raise ValueError("MatchRecords: target_cls and target_img must have the same length")
        if self.n_images < 0 or self.nc < 1:
            raise ValueError(f"MatchRecords: need n_images >= 0 and nc >= 1, got {self.n_images}, {self.nc}")
        for name, idx, hi in (
            ("pred_img", self.pred_img, self.n_images),
            ("target_img", self.target_img, self.n_images),
            ("pred_cls", self.pred_cls, self.nc),
            ("target_cls", self.target_cls, self.nc),
        ):
            if idx.size and (idx.min() < 0 or idx.max() >= hi):
                raise ValueError(f"MatchRecords: {name} must lie in [0, {hi - 1}]")
        if not np.isfinite(self.conf).all():
            raise ValueError("MatchRecords: conf must be finite")
        # the matching gives every label to at most one prediction per threshold
        if n:
            key_p = self.pred_img * self.nc + self.pred_cls
            key_t = self.target_img * self.nc + self.target_cls
            size = self.n_images * self.nc
            labels = np.bincount(key_t, minlength=size)[key_p]
            order = np.argsort(key_p, kind="stable")
            starts = np.flatnonzero(np.r_[True, key_p[order][1:] != key_p[order][:-1]])
            per_key = np.add.reduceat(self.tp[order].astype(np.int64), starts, axis=0)
            if (per_key > labels[order][starts, None]).any():
                raise ValueError(
                    "MatchRecords: more true positives than labels for some image and class "
                    "(each label can match one prediction per IoU threshold)"
                )

    # ----------------------------------------------------------------------------------------
    @property
    def n_pred(self) -> int:
        """Number of predictions."""
        return int(self.tp.shape[0])

    @property
    def n_targets(self) -> int:
        """Number of labels."""
        return int(self.target_cls.size)

    def same_images(self, other: MatchRecords) -> bool:
        """Whether ``other`` comes from the same validation set (same images, same labels)."""
        return (
            self.n_images == other.n_images
            and self.nc == other.nc
            and np.array_equal(self.target_img, other.target_img)
            and np.array_equal(self.target_cls, other.target_cls)
            and np.array_equal(self.iouv, other.iouv)
        )

    def save(self, path: str | Path) -> Path:
        """Write a compressed ``.npz`` (atomically; no pickled objects). Returns the path."""
        p = Path(path)
        arrays = {
            "version": np.array(RECORDS_VERSION, dtype=np.int64),
            "tp": self.tp,
            "conf": self.conf,
            "pred_cls": self.pred_cls,
            "pred_img": self.pred_img,
            "target_cls": self.target_cls,
            "target_img": self.target_img,
            "n_images": np.array(self.n_images, dtype=np.int64),
            "nc": np.array(self.nc, dtype=np.int64),
            "iouv": self.iouv,
            "end_recall_one": np.array(self.end_recall_one, dtype=bool),
        }
        with atomic_paths(p) as (tmp,):
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez_compressed(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
        return p

    @classmethod
    def load(cls, path: str | Path) -> MatchRecords:
        """Read a file written by :meth:`save` (``allow_pickle=False``)."""
        with np.load(Path(path), allow_pickle=False) as z:
            keys = set(z.files)
            need = {"version", "tp", "conf", "pred_cls", "pred_img", "target_cls", "target_img"}
            need |= {"n_images", "nc", "iouv", "end_recall_one"}
            if not need <= keys:
                raise ValueError(f"{path}: not a match-records file (missing {sorted(need - keys)})")
            version = int(z["version"])
            if version != RECORDS_VERSION:
                raise ValueError(
                    f"{path}: match-records version {version}, this yoloattn reads {RECORDS_VERSION}"
                )
            return cls(
                tp=z["tp"],
                conf=z["conf"],
                pred_cls=z["pred_cls"],
                pred_img=z["pred_img"],
                target_cls=z["target_cls"],
                target_img=z["target_img"],
                n_images=int(z["n_images"]),
                nc=int(z["nc"]),
                iouv=z["iouv"],
                end_recall_one=bool(z["end_recall_one"]),
            )

    def select(self, images: Sequence[int] | np.ndarray) -> MatchRecords:
        """The records of the images ``images`` (in that order, repeats allowed), renumbered."""
        idx = np.asarray(images, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_images):
            raise ValueError(f"image indices must lie in [0, {self.n_images - 1}]")
        p_order = np.argsort(self.pred_img, kind="stable")
        t_order = np.argsort(self.target_img, kind="stable")
        p_start = np.searchsorted(self.pred_img[p_order], np.arange(self.n_images + 1))
        t_start = np.searchsorted(self.target_img[t_order], np.arange(self.n_images + 1))
        p_sel = [p_order[p_start[i] : p_start[i + 1]] for i in idx]
        t_sel = [t_order[t_start[i] : t_start[i + 1]] for i in idx]
        pi = np.concatenate(p_sel) if p_sel else np.zeros(0, np.int64)
        ti = np.concatenate(t_sel) if t_sel else np.zeros(0, np.int64)
        return MatchRecords(
            tp=self.tp[pi],
            conf=self.conf[pi],
            pred_cls=self.pred_cls[pi],
            pred_img=np.repeat(np.arange(idx.size), [a.size for a in p_sel]),
            target_cls=self.target_cls[ti],
            target_img=np.repeat(np.arange(idx.size), [a.size for a in t_sel]),
            n_images=int(idx.size),
            nc=self.nc,
            iouv=self.iouv,
            end_recall_one=self.end_recall_one,
        )


# --------------------------------------------------------------------------------------------
# building records
# --------------------------------------------------------------------------------------------
def records_from_stats(
    stats: Iterable[ImageStats],
    nc: int,
    *,
    iouv: torch.Tensor | Sequence[float] | np.ndarray | None = None,
    end_recall_one: bool = True,
) -> MatchRecords:
    """Records from per-image stats ``(tp [n, T], conf [n], pred_cls [n], target_cls [m])``.

    This is the list ``DetMetrics`` accumulates in :meth:`~yoloattn.engine.metrics.DetMetrics.update`
    (one entry per image, also for images without predictions or labels), so the evaluator can
    keep its records at no cost. ``end_recall_one`` follows the metric style (YOLOv5: True).
    """
    tps: list[np.ndarray] = []
    confs: list[np.ndarray] = []
    pcls: list[np.ndarray] = []
    tcls: list[np.ndarray] = []
    thr = IOUV.double().numpy() if iouv is None else np.asarray(iouv, dtype=np.float64).reshape(-1)
    for tp, conf, pc, tc in stats:
        tp_a = np.asarray(tp.cpu() if isinstance(tp, torch.Tensor) else tp, dtype=bool)
        tps.append(tp_a.reshape(-1, thr.size))
        confs.append(np.asarray(conf.cpu() if isinstance(conf, torch.Tensor) else conf, np.float64).ravel())
        pcls.append(np.asarray(pc.cpu() if isinstance(pc, torch.Tensor) else pc).ravel().astype(np.int64))
        tcls.append(np.asarray(tc.cpu() if isinstance(tc, torch.Tensor) else tc).ravel().astype(np.int64))
    n_images = len(tps)
    if n_images == 0:
        empty = np.zeros(0, np.int64)
        return MatchRecords(
            np.zeros((0, thr.size), bool), np.zeros(0), empty, empty, empty, empty, 0, nc, thr, end_recall_one
        )
    return MatchRecords(
        tp=np.concatenate(tps, 0),
        conf=np.concatenate(confs),
        pred_cls=np.concatenate(pcls),
        pred_img=np.repeat(np.arange(n_images), [a.size for a in confs]),
        target_cls=np.concatenate(tcls),
        target_img=np.repeat(np.arange(n_images), [a.size for a in tcls]),
        n_images=n_images,
        nc=nc,
        iouv=thr,
        end_recall_one=end_recall_one,
    )


def image_record(
    preds: torch.Tensor | None,
    labels: torch.Tensor | None,
    iouv: torch.Tensor | Sequence[float] | None = None,
    style: Literal["v5", "v7"] = "v5",
) -> ImageStats:
    """One image's stats from predictions ``[n, 6]`` (xyxy, conf, cls) and labels ``[m, 5]``.

    Uses the evaluator's matching (:func:`~yoloattn.engine.metrics.match_predictions`, or
    :func:`~yoloattn.engine.metrics.match_predictions_v7` for ``style="v7"``), so a list of these
    given to :func:`records_from_stats` equals what ``DetMetrics`` accumulates.
    """
    p = torch.zeros((0, 6)) if preds is None else preds.detach().cpu()
    lab = torch.zeros((0, 5)) if labels is None else labels.detach().cpu()
    match = match_predictions if style == "v5" else match_predictions_v7
    tp = match(p, lab, iouv).numpy()
    return tp, p[:, 4].double().numpy(), p[:, 5].numpy().astype(np.int64), lab[:, 0].numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------
# mAP from records
# --------------------------------------------------------------------------------------------
def _image_weights(records: MatchRecords, weights: Any) -> np.ndarray:
    if weights is None:
        return np.ones(records.n_images)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != records.n_images:
        raise ValueError(f"weights must have one entry per image ({records.n_images}), got {w.size}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and >= 0")
    return w


def map_from_records(records: MatchRecords, weights: Any = None) -> tuple[float, float, np.ndarray]:
    """``(mAP@0.5, mAP@0.5:0.95, per-class AP@0.5:0.95)`` recomputed from ``records``.

    Args:
        records: the match records of one evaluation.
        weights: optional ``[n_images]`` multiplicities (e.g. bootstrap resample counts): image
            ``i`` counts ``weights[i]`` times, its labels included. ``None`` means all ones.

    With ``weights=None`` the result equals ``DetMetrics.compute()`` (``map50``, ``map``,
    ``ap``) on the same stats, bit for bit: the same operations in the same order as
    :func:`~yoloattn.engine.metrics.ap_per_class`, with weighted cumulative TP/FP counts and
    weighted label counts. For integer weights the result equals physically repeating every image
    ``weights[i]`` times (a prediction repeated ``k`` times moves recall and precision in one step
    of ``k``; the precision envelope, and hence AP, is the same). Classes without (weighted)
    labels are not scored: their per-class entry is NaN and they are left out of the means.
    """
    w_img = _image_weights(records, weights)
    n_lab = np.bincount(records.target_cls, weights=w_img[records.target_img], minlength=records.nc)
    classes = np.flatnonzero(n_lab > 0)
    per_class = np.full(records.nc, np.nan)
    k, nt = classes.size, records.tp.shape[1]
    if k == 0:
        return 0.0, 0.0, per_class
    pw = w_img[records.pred_img]
    keep = pw > 0
    tp = records.tp[keep].astype(np.float64)
    conf = records.conf[keep]
    pcls = records.pred_cls[keep]
    pw = pw[keep]
    ap = np.zeros((k, nt))
    if tp.size and tp.any():  # DetMetrics.compute skips ap_per_class when nothing matched
        order = np.argsort(-conf, kind="stable")
        tp, pcls, pw = tp[order], pcls[order], pw[order]
        for ci, c in enumerate(classes):
            sel = pcls == c
            if not sel.any():
                continue
            tp_c, w_c = tp[sel], pw[sel, None]
            tpc = (tp_c * w_c).cumsum(0)
            fpc = ((1.0 - tp_c) * w_c).cumsum(0)
            recall = tpc / (n_lab[c] + _EPS)
            precision = tpc / (tpc + fpc)
            for j in range(nt):
                ap[ci, j] = compute_ap(recall[:, j], precision[:, j], records.end_recall_one)[0]
    ap50, ap5095 = ap[:, 0], ap.mean(1)
    per_class[classes] = ap5095
    return float(ap50.mean()), float(ap5095.mean()), per_class


# --------------------------------------------------------------------------------------------
# synthetic records (tests, benchmarks, docs)
# --------------------------------------------------------------------------------------------
def simulate_records(
    n_images: int,
    nc: int = 80,
    *,
    rng: np.random.Generator | int = 0,
    gt_per_image: float = 3.0,
    preds_per_image: tuple[int, int] = (20, 50),
    detect_rate: float = 0.8,
    iou_quality: float = 0.75,
    duplicate_rate: float = 0.2,
    labels: tuple[np.ndarray, np.ndarray] | None = None,
) -> MatchRecords:
    """Plausible synthetic match records (no boxes): for tests, benchmarks and examples.

    Every image gets about ``gt_per_image`` labels (classes drawn with a long-tailed frequency);
    each label is found with probability ``detect_rate`` by one prediction whose IoU is drawn
    around ``iou_quality`` (TP at every threshold below it), sometimes with a less confident
    duplicate (FP); the rest, up to 20-50 predictions per image, are low-confidence false positives
    of random classes (confidence >= 0.001). ``labels=(target_cls, target_img)`` reuses a label set,
    so several "models" can share one validation set.
    """
    g = np.random.default_rng(rng)
    thr = IOUV.double().numpy()
    if labels is None:
        freq = 1.0 / np.arange(1, nc + 1) ** 0.8
        n_gt = g.poisson(gt_per_image, n_images)
        target_img = np.repeat(np.arange(n_images), n_gt)
        target_cls = g.choice(nc, size=target_img.size, p=freq / freq.sum())
    else:
        target_cls, target_img = (np.asarray(a, dtype=np.int64) for a in labels)
    m = target_cls.size
    found = g.uniform(size=m) < detect_rate
    iou = np.clip(g.normal(iou_quality, 0.12, m), 0.3, 0.99)
    hit_tp = iou[found, None] >= thr[None, :] - 1e-12
    hit_conf = np.clip(g.beta(5, 2, found.sum()), 0.001, 1.0)
    dup = found & (g.uniform(size=m) < duplicate_rate)
    dup_conf = np.clip(g.beta(2, 5, dup.sum()), 0.001, 1.0)
    n_pred = g.integers(preds_per_image[0], preds_per_image[1] + 1, n_images)
    used = np.bincount(target_img[found], minlength=n_images) + np.bincount(
        target_img[dup], minlength=n_images
    )
    n_bg = np.maximum(n_pred - used, 0)
    bg_img = np.repeat(np.arange(n_images), n_bg)
    bg_cls = g.integers(0, nc, bg_img.size)
    bg_conf = np.clip(g.beta(1, 12, bg_img.size), 0.001, 1.0)
    tp = np.concatenate((hit_tp, np.zeros((dup.sum() + bg_img.size, thr.size), bool)))
    conf = np.concatenate((hit_conf, dup_conf, bg_conf))
    pred_cls = np.concatenate((target_cls[found], target_cls[dup], bg_cls))
    pred_img = np.concatenate((target_img[found], target_img[dup], bg_img))
    order = np.lexsort((-conf, pred_img))  # per image, most confident first (as after NMS)
    return MatchRecords(
        tp=tp[order],
        conf=conf[order],
        pred_cls=pred_cls[order],
        pred_img=pred_img[order],
        target_cls=target_cls,
        target_img=target_img,
        n_images=n_images,
        nc=nc,
    )
