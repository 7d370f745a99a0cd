"""Two-stage transfer learning, as in the study: feature extractor, then fine-tuning.

Stage 1 trains the head on a frozen backbone; stage 2 unfreezes the last layers of the backbone
at a lower learning rate. Both stop early on validation loss and keep their best weights.
Everything lands in the run folder; see :func:`train`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facemask_edge.data.sources import DEFAULT_GROUP_BY
from facemask_edge.errors import FacemaskError
from facemask_edge.progress import log

__all__ = ["TrainConfig", "train", "make_dataset", "augmenter", "BestWeights"]


@dataclass
class TrainConfig:
    """Every training option; saved as ``config.json``."""

    data: str | list[str] = ""  # one data root, or several merged by class name
    out: str = ""
    arch: str = "mobilenet_v1"
    alpha: float = 0.25
    size: int = 96
    color: str = "rgb"
    weights: str = "none"
    blocks: int | None = None
    cut: str | None = None
    skip_blocks: list[int] | None = None  # drop these stride-1 backbone blocks (1-based)
    head: str = "avg"  # "avg" (pool + 1x1 conv) or "spatial" (a conv over the whole feature map)
    dropout: float = 0.3
    split: str = "stratified"
    group_by: str = DEFAULT_GROUP_BY  # regex on file names: crops of one photo share a split ("" = off)
    exclude_noncommercial: bool = False  # leave out non-commercial sources (mfn_*) at scan time
    class_weight: str = "balanced"  # "balanced": loss weight n / (classes x n_class) on train; "none"
    seed: int = 1337
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    batch_size: int = 32
    head_epochs: int = 3
    finetune_epochs: int = 60
    head_lr: float = 1e-2
    finetune_lr: float = 2e-3
    finetune_layers: int = 0  # unfreeze the last N backbone layers; 0 = all of them
    patience: int = 60  # = the fine-tune schedule: run the cosine to the end, keep the best epoch
    augment: bool = True
    train_bn: bool = True  # let BatchNormalization adapt in stage 2
    label_smoothing: float = 0.1
    teacher: str | list[str] | None = None  # trained run(s) whose (mean) predictions are soft targets
    distill_alpha: float = 0.5  # weight of the true labels against the teacher's
    distill_temperature: float = 2.0
    distribute: str | None = None
    wandb: bool = False
    energy: bool = True
    extra: dict = field(default_factory=dict)


def augmenter(seed: int):
    """Flip, small rotation/zoom/shift, brightness and contrast, on [0, 1] images."""
    from facemask_edge._tf import keras

    L = keras().layers
    return keras().Sequential([
        L.RandomFlip("horizontal", seed=seed),
        L.RandomRotation(0.06, fill_mode="reflect", seed=seed + 1),
        L.RandomZoom((-0.12, 0.12), fill_mode="reflect", seed=seed + 2),
        L.RandomTranslation(0.06, 0.06, fill_mode="reflect", seed=seed + 3),
        L.RandomBrightness(0.15, value_range=(0.0, 1.0), seed=seed + 4),
        L.RandomContrast(0.2, seed=seed + 5),
    ], name="augment")


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 training: bool = False, seed: int = 0, augment: bool = True):
    """A ``tf.data`` pipeline of ``(pixel / 255, one-hot)`` batches, augmented when training."""
    from facemask_edge._tf import tf

    T = tf()
    ds = T.data.Dataset.from_tensor_slices((images, labels))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    aug = augmenter(seed) if (training and augment) else None

    soft = labels.ndim == 2  # already target distributions (distillation)

    def prep(x, y):
        x = T.cast(x, T.float32) / 255.0
        if aug is not None:
            x = T.clip_by_value(aug(x, training=True), 0.0, 1.0)
        return x, (T.cast(y, T.float32) if soft else T.one_hot(y, num_classes))

    ds = ds.map(prep, num_parallel_calls=T.data.AUTOTUNE)
    opts = T.data.Options()
    opts.experimental_distribute.auto_shard_policy = T.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(opts).prefetch(T.data.AUTOTUNE)


class _Callbacks:
    @staticmethod
    def make():
        from facemask_edge._tf import keras

        class BestWeights(keras().callbacks.Callback):
            """Early stopping on validation loss that always ends on the best epoch's weights."""

            def __init__(self, patience: int, label: str):
                super().__init__()
                self.patience, self.label = patience, label
                self.best = (np.inf, -np.inf)
                self.best_epoch, self.best_weights, self.wait = -1, None, 0
                self.t0 = time.monotonic()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                vl, va = logs.get("val_loss", np.inf), logs.get("val_accuracy", 0.0)
                log(f"  {self.label} epoch {epoch + 1}: loss {logs.get('loss', 0):.4f} "
                    f"acc {logs.get('accuracy', 0):.4f} val_loss {vl:.4f} val_acc {va:.4f} "
                    f"({time.monotonic() - self.t0:.0f} s)")
                # Better = higher val accuracy, ties broken by lower val loss.
                if (va, -vl) > (self.best[1], -self.best[0]):
                    self.best, self.best_epoch, self.wait = (vl, va), epoch, 0
                    self.best_weights = self.model.get_weights()
                else:
                    self.wait += 1
                    if self.wait >= self.patience:
                        self.model.stop_training = True

            def on_train_end(self, logs=None):
                if self.best_weights is not None:
                    self.model.set_weights(self.best_weights)

        return BestWeights


def BestWeights(patience: int, label: str):  # noqa: N802 - a class factory (TF imported lazily)
    return _Callbacks.make()(patience, label)


def _strategy(name: str | None):
    from facemask_edge._tf import tf

    T = tf()
    if not name:
        return T.distribute.get_strategy(), True
    if name == "mirrored":
        return T.distribute.MirroredStrategy(), True
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise FacemaskError("--distribute multiworker needs TF_CONFIG in the environment",
                                "see README 'Multi-worker training' or scripts/multiworker_demo.py")
        tf_config = json.loads(os.environ["TF_CONFIG"])
        strategy = T.distribute.MultiWorkerMirroredStrategy()
        task = tf_config.get("task", {})
        chief = task.get("type") in ("chief", None) or (task.get("type") == "worker"
                                                        and task.get("index", 0) == 0
                                                        and "chief" not in tf_config.get("cluster", {}))
        return strategy, chief
    raise FacemaskError(f"unknown --distribute {name!r}", "use mirrored or multiworker")


def teacher_dirs(teacher) -> list[Path]:
    """The teacher run folders: one path, a comma-separated string of them, or a list."""
    if not teacher:
        return []
    items = str(teacher).split(",") if isinstance(teacher, (str, Path)) else list(teacher)
    return [Path(t.strip()) for t in items if str(t).strip()]


def teacher_targets(teacher, data: str, paths: list[str], labels: np.ndarray,
                    num_classes: int, alpha: float, temperature: float) -> np.ndarray:
    """Soft targets: ``alpha`` x one-hot + (1 - alpha) x the teachers' tempered probabilities.

    Each teacher (a trained run, e.g. at a larger input size) sees each image at its own size
    and colour; predictions are matched to the student's images by file path. Several teachers
    are an ensemble: their probabilities are averaged before tempering.
    """
    from facemask_edge._tf import keras
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.runs import load_config

    dirs = teacher_dirs(teacher)
    probs = np.zeros((len(paths), num_classes), np.float64)
    for teacher_dir in dirs:
        tcfg = load_config(teacher_dir)
        tds = scan_dataset(data, size=tcfg["size"], color=tcfg["color"])
        index = {it.path: i for i, it in enumerate(tds.items)}
        missing = [p for p in paths if p not in index]
        if missing:
            raise FacemaskError(f"teacher {teacher_dir} lacks {len(missing)} image(s) (first: {missing[0]})",
                                "train the teacher on the same data set")
        model = keras().models.load_model(Path(teacher_dir) / "model.keras", compile=False)
        probs += _predict(model, tds.images[[index[p] for p in paths]]) / len(dirs)
    tempered = np.exp(np.log(np.clip(probs, 1e-7, 1.0)) / temperature)
    tempered /= tempered.sum(axis=1, keepdims=True)
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    return (alpha * onehot + (1 - alpha) * tempered).astype(np.float32)


CLASS_WEIGHTS = ("balanced", "none")


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> dict[int, float] | None:
    """Per-class loss weights for ``fit``: ``"balanced"`` gives each class the same total weight
    (``n / (classes x n_class)``, scikit-learn's rule), so a small class such as "mask worn
    incorrectly" is not drowned by the large ones; ``"none"``: no weights.

    Raises:
        FacemaskError: an unknown mode.
    """
    if mode not in CLASS_WEIGHTS:
        raise FacemaskError(f"unknown class_weight {mode!r}", f"use one of {', '.join(CLASS_WEIGHTS)}")
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    n = counts.sum()
    return {c: (float(n / (num_classes * counts[c])) if counts[c] else 0.0) for c in range(num_classes)}


def _predict(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return model.predict(images.astype(np.float32) / 255.0, batch_size=batch_size, verbose=0)


def train(cfg: TrainConfig) -> dict:
    """Train a run: scan, split, build, stage 1 + stage 2, evaluate, and write the run folder.

    Writes ``model.keras``, ``labels.txt``, ``split.json``, ``manifest.json``, ``skipped.txt``,
    ``config.json``, ``metrics.json``, ``confusion_matrix.png`` and ``training_curves.png``.

    Returns:
        The metrics dictionary (also in ``metrics.json``).
    """
    from facemask_edge._tf import keras, tf
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.splits import make_split, save_split, split_indices
    from facemask_edge.metrics import classification_metrics
    from facemask_edge.plots import plot_confusion, plot_curves
    from facemask_edge.runs import write_json
    from facemask_edge.train.model import ModelSpec, build_model
    from facemask_edge.train.tracking import EnergyMeter, WandbRun

    t_start = time.monotonic()
    class_weights(np.zeros(0, np.int64), 1, cfg.class_weight)  # an unknown mode fails before the scan
    strategy, chief = _strategy(cfg.distribute)
    out = Path(cfg.out) if chief else Path(tempfile.mkdtemp(prefix="facemask-worker-"))
    out.mkdir(parents=True, exist_ok=True)
    k, T = keras(), tf()
    T.random.set_seed(cfg.seed)
    np.random.seed(cfg.seed)

    ds = scan_dataset(cfg.data, size=cfg.size, color=cfg.color,
                      exclude_noncommercial=cfg.exclude_noncommercial)
    log(ds.summary_line())
    ds.write_manifest(out)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    split = make_split(ds, cfg.split, cfg.seed, fractions, group_by=cfg.group_by)
    split_path = save_split(split, out)
    idx = split_indices(ds, split)
    classes = ds.classes
    (out / "labels.txt").write_text("".join(c + "\n" for c in classes))
    config = asdict(cfg)
    config["data"] = _resolved_data(cfg.data)
    config["data_root"] = str(ds.root)
    config["classes"] = classes
    write_json(out / "config.json", config)
    log(f"split ({cfg.split}, seed {cfg.seed}): " +
        ", ".join(f"{n} {len(v)}" for n, v in idx.items()))

    x = {n: ds.images[i] for n, i in idx.items()}
    y = {n: ds.labels[i] for n, i in idx.items()}
    if len(x["train"]) == 0 or len(x["val"]) == 0:
        raise FacemaskError(f"too few images to split ({len(ds.items)})",
                            "add images: each class needs a few for train, validation and test")
    nc = len(classes)
    bs = cfg.batch_size * strategy.num_replicas_in_sync
    train_targets = y["train"]
    if cfg.teacher:
        log(f"distilling from {cfg.teacher} (alpha {cfg.distill_alpha}, T {cfg.distill_temperature})")
        train_targets = teacher_targets(cfg.teacher, cfg.data,
                                        [ds.items[i].path for i in idx["train"]], y["train"],
                                        len(classes), cfg.distill_alpha, cfg.distill_temperature)
    weights = class_weights(y["train"], nc, cfg.class_weight)
    if weights:
        log("class weights (balanced): " + ", ".join(f"{c} {weights[i]:.2f}" for i, c in enumerate(classes)))
    train_ds = make_dataset(x["train"], train_targets, nc, bs, True, cfg.seed, cfg.augment)
    val_ds = make_dataset(x["val"], y["val"], nc, bs)

    energy = EnergyMeter(out) if cfg.energy else None
    wandb = WandbRun(cfg.wandb and chief, out, config)
    wandb.log_split(split_path)

    spec = ModelSpec(cfg.arch, cfg.alpha, cfg.size, cfg.color, cfg.weights, cfg.blocks, cfg.cut,
                     tuple(cfg.skip_blocks or ()), cfg.dropout, nc, cfg.head)
    history: dict[str, list[float]] = {}
    with strategy.scope():
        model, backbone = build_model(spec)
        loss = k.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing)
    stage_times = {}

    def run_stage(name, epochs, lr, trainable):
        if epochs <= 0:
            return 0
        for layer in model.layers:
            if layer.name in backbone:
                layer.trainable = layer.name in trainable
                if isinstance(layer, k.layers.BatchNormalization) and not cfg.train_bn:
                    layer.trainable = False  # keep pretrained BN statistics
        with strategy.scope():
            steps = max(1, int(np.ceil(len(x["train"]) / bs))) * max(1, epochs)
            schedule = k.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
            model.compile(k.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
        t0 = time.monotonic()
        ctx = energy.stage(name) if energy else _null()
        with ctx:
            h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0,
                          class_weight=weights, callbacks=[BestWeights(cfg.patience, name)])
        stage_times[name] = round(time.monotonic() - t0, 1)
        for key, values in h.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        wandb.log({f"{name}/{k_}": v[-1] for k_, v in h.history.items()})
        return len(h.history.get("loss", []))

    if cfg.head_epochs > 0:
        log(f"stage 1: feature extractor ({len(backbone)} backbone layers frozen), "
            f"up to {cfg.head_epochs} epochs")
    n1 = run_stage("feature_extractor", cfg.head_epochs, cfg.head_lr, set())
    unfreeze = backbone if cfg.finetune_layers <= 0 else backbone[-cfg.finetune_layers:]
    if cfg.finetune_epochs > 0:
        log(f"stage 2: fine-tuning the last {len(unfreeze)} backbone layers, "
            f"up to {cfg.finetune_epochs} epochs")
        run_stage("fine_tune", cfg.finetune_epochs, cfg.finetune_lr, set(unfreeze))
    for layer in model.layers:
        layer.trainable = True

    metrics: dict = {"classes": classes}
    for name in ("val", "test"):
        if len(x[name]):
            pred = _predict(model, x[name]).argmax(axis=1)
            metrics[name] = classification_metrics(y[name], pred, classes)
    metrics["test_images"] = int(len(x["test"]))
    metrics["train_images"] = int(len(x["train"]))
    metrics["val_images"] = int(len(x["val"]))
    metrics["skipped_files"] = len(ds.skipped)
    metrics["params"] = int(model.count_params())
    metrics["stage_seconds"] = stage_times
    metrics["epochs"] = {"feature_extractor": n1, "fine_tune": len(history.get("loss", [])) - n1}
    metrics["wall_seconds"] = round(time.monotonic() - t_start, 1)
    metrics["energy"] = energy.report() if energy else {"available": False}
    metrics["history"] = history

    model.save(out / "model.keras")  # every worker saves (a collective op under multi-worker)
    if chief:
        write_json(out / "metrics.json", metrics)
        if "test" in metrics:
            plot_confusion(metrics["test"]["confusion_matrix"], classes, out / "confusion_matrix.png",
                           f"float model, test split ({metrics['test_images']} images): "
                           f"accuracy {metrics['test']['accuracy']:.4f}")
        plot_curves(history, out / "training_curves.png", [n1])
        wandb.finish({f"test_{k_}": metrics["test"][k_] for k_ in ("accuracy", "f1")}
                     if "test" in metrics else {})
    else:
        shutil.rmtree(out, ignore_errors=True)
    return metrics


def _resolved_data(data):
    """``config.json``'s ``data``: the absolute path, or the list of them for several roots."""
    if isinstance(data, (list, tuple)):
        return [str(Path(d).expanduser().resolve()) for d in data] if len(data) > 1 \
            else str(Path(data[0]).expanduser().resolve())
    return str(Path(data).expanduser().resolve())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
