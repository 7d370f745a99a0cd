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
import typing
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facemask_edge.data.sources import DEFAULT_GROUP_BY
from facemask_edge.errors import FacemaskError
from facemask_edge.fmt import plural
from facemask_edge.options import option
from facemask_edge.progress import log
from facemask_edge.train.augment import augmenter, camera_effects
from facemask_edge.train.model import ARCHS, HEADS

__all__ = ["TrainConfig", "train", "make_dataset", "BestWeights", "stage_callbacks"]

CLASS_WEIGHTS = ("balanced", "none")  # TrainConfig.class_weight; see class_weights()


def _weights_check(value: str) -> str | None:
    """``imagenet``, ``none`` or an existing Keras model file."""
    if value in ("imagenet", "none") or Path(value).expanduser().is_file():
        return None
    return "imagenet, none, or the path of an existing Keras model file (the file is not there)"


def _teachers_check(value) -> str | None:
    missing = [t for t in ([value] if isinstance(value, str) else value) if not Path(t).expanduser().is_dir()]
    return f"trained run folders (not found: {', '.join(missing)})" if missing else None


@dataclass
class TrainConfig:
    """Every training option; saved as ``config.json``.

    The fields' metadata (:func:`facemask_edge.options.option`) is the one description of each
    option: ``train``, ``pipeline`` and ``sweep`` derive their command-line options from it, and
    ``[train]`` tables of config files are checked against it.
    """

    CLI_COMMAND: typing.ClassVar[str] = "train"

    data: str | list[str] = option("", help="Data set: a folder with one sub-folder per class, or a .zip of "
                                            "one; repeat it (a list in --config) to merge several by class "
                                            "folder name.")
    out: str = option("", help="Run folder to write (created).")
    arch: str = option("mobilenet_v1", choices=ARCHS,
                       help="Backbone. vgg16/densenet201 are for host-side comparison only.")
    alpha: float = option(0.25, help="MobileNet width multiplier.")
    size: int = option(96, help="Input side in pixels.")
    color: str = option("rgb", choices=("rgb", "grayscale"), help="Input colour.")
    # ImageNet: the pretrained backbone a fresh machine can get (Keras downloads it once into
    # ~/.keras); "none" would train the frozen-backbone stage on random features.
    weights: str = option("imagenet", check=_weights_check, metavar="imagenet|none|PATH",
                          help="imagenet (Keras download, once), none (random initialisation), or PATH "
                               "to a Keras model file whose layers up to the pooled features become the "
                               "backbone (e.g. vww_96.h5).")
    blocks: int | None = option(None, unset="all", help="Keep only the first N depthwise-separable blocks of the backbone.")
    cut: str | None = option(None, help="Or cut the backbone after this layer name.")
    skip_blocks: list[int] | None = option(
        None, metavar="N,N", help="Drop these stride-1 separable blocks (1-based), e.g. 3,5 (fewer MACs; "
                                  "the rest keep their weights).")
    head: str = option("avg", choices=HEADS,
                       help="Classifier: average-pool then 1x1 conv, or one conv over the whole feature map "
                            "(keeps where features are; for small inputs).")
    dropout: float = option(0.3, help="Dropout before the classifier.")
    split: str = option("stratified", choices=("stratified", "seed-notebook"), help="How to split train/val/test.")
    group_by: str = option(DEFAULT_GROUP_BY, metavar="REGEX",
                           help="Regex on file names whose capture group names the photo: crops of one photo "
                                "stay in one split ('' = off; see README).")
    near_duplicates: int | None = option(None, unset="off", metavar="BITS",
                                         help="Also keep near-duplicate images (64-bit perceptual hash within "
                                              "BITS, mirror included; 6 suits facemask-dev) in one split, "
                                              "joined to the --group-by groups; nothing is dropped (see "
                                              "facemask-edge data --hygiene).")
    exclude_noncommercial: bool = option(False, flag="--exclude-noncommercial/--include-noncommercial",
                                         help="Leave out files of non-commercial sources (MaskedFace-Net, "
                                              "mfn_*) at scan time.")
    class_weight: str = option("balanced", choices=CLASS_WEIGHTS,
                               help="Loss weights per class: balanced = each class weighs the same in "
                                    "total (n / (classes x n_class) on train); none = no weights.")
    seed: int = option(1337, help="Seed of the split, initialisation and augmentation.")
    val_fraction: float = option(0.15, help="Share of the images in the validation split.")
    test_fraction: float = option(0.15, help="Share of the images in the test split.")
    batch_size: int = option(32, help="Batch size.")
    head_epochs: int = option(3, help="Stage 1 (frozen backbone) epochs at most.")
    finetune_epochs: int = option(60, help="Stage 2 (fine-tuning) epochs at most; 0 skips it.")
    head_lr: float = option(1e-2, help="Stage 1 learning rate.")
    finetune_lr: float = option(2e-3, help="Stage 2 peak learning rate (cosine schedule).")
    finetune_layers: int = option(0, help="Unfreeze the last N backbone layers in stage 2 (0 = all).")
    # = the fine-tune schedule: run the cosine to the end, keep the best epoch
    patience: int = option(60, help="Early stopping: epochs without a better validation result (the "
                                    "default lets the cosine schedule run to its end; the best epoch is kept).")
    augment: bool = option(True, help="Flip, rotate, zoom, shift, brightness and contrast in training.")
    # Off by default: on the main job it cost 1.1 points of test accuracy (benchmarks/sweep-14/).
    camera_augment: bool = option(False, help="With --augment, also camera effects: crop jitter, colour cast, "
                                              "low light, blur, sensor noise, RGB565 bits, occlusion.")
    train_bn: bool = option(True, flag="--train-bn/--freeze-bn",
                            help="Let BatchNormalization adapt in fine-tuning, or keep it frozen.")
    label_smoothing: float = option(0.1, help="Label smoothing of the loss.")
    teacher: str | list[str] | None = option(
        None, check=_teachers_check,
        help="Distil from this trained run (its predictions become soft targets); repeat it for an "
             "ensemble of teachers.")
    distill_alpha: float = option(0.5, help="Weight of the true labels against the teacher's.")
    distill_temperature: float = option(2.0, help="Softmax temperature of the distillation.")
    distribute: str | None = option(None, choices=(None, "mirrored", "multiworker"),
                                    help="tf.distribute strategy; multiworker reads TF_CONFIG.")
    wandb: bool = option(False, help="Log to Weights & Biases (offline mode).")
    energy: bool = option(True, help="Measure energy with CodeCarbon when installed.")
    extra: dict = option(default_factory=dict, help="Free-form notes stored in config.json.")


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 training: bool = False, seed: int = 0, augment: bool = True, camera: bool = False):
    """A ``tf.data`` pipeline of ``(pixel / 255, one-hot)`` batches, augmented when training
    (``camera``: also :func:`~facemask_edge.train.augment.camera_effects`)."""
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
            if camera:
                x = camera_effects(x, seed + 100)
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

    @staticmethod
    def epoch_bar():
        from facemask_edge._tf import keras

        class EpochBar(keras().callbacks.Callback):
            """A progress bar over the batches of each epoch, on a terminal only (logs keep the
            one line per epoch that :class:`BestWeights` writes)."""

            def __init__(self, label: str, epochs: int, steps: int):
                super().__init__()
                self.label, self.epochs, self.steps = label, epochs, steps
                self._cm = self._bar = None

            def on_epoch_begin(self, epoch, logs=None):
                from facemask_edge.progress import progress

                self._cm = progress(f"  {self.label} epoch {epoch + 1}/{self.epochs}",
                                    total=self.steps, transient=True)
                self._bar = self._cm.__enter__()

            def on_train_batch_end(self, batch, logs=None):
                if self._bar is not None:
                    self._bar.advance()

            def on_epoch_end(self, epoch, logs=None):
                if self._cm is not None:
                    self._cm.__exit__(None, None, None)
                    self._cm = self._bar = None

            on_train_end = on_epoch_end

        return EpochBar


def BestWeights(patience: int, label: str):  # noqa: N802 - a class factory (TF imported lazily)
    return _Callbacks.make()(patience, label)


def stage_callbacks(run_dir: Path, label: str, epochs: int, steps: int, fresh: bool = True) -> list:
    """What every ``fit`` of a run gets besides :func:`BestWeights`: a bar per epoch on a
    terminal, and TensorBoard logs in ``RUN_DIR/tensorboard/LABEL`` (scalars per epoch; no
    graph, histograms or profiler: they cost time and disk; skipped if the ``tensorboard``
    package, a dependency, was removed).
    """
    import importlib.util
    import sys

    from facemask_edge._tf import keras

    out = []
    if importlib.util.find_spec("tensorboard") is not None:  # tf.summary.scalar lives there
        logdir = Path(run_dir) / "tensorboard" / label
        if fresh:  # a stage run again replaces its curves; a resumed one continues them
            shutil.rmtree(logdir, ignore_errors=True)
        out.append(keras().callbacks.TensorBoard(log_dir=str(logdir), histogram_freq=0,
                                                 write_graph=False, write_images=False,
                                                 update_freq="epoch", profile_batch=0))
    if sys.stderr.isatty():
        out.insert(0, _Callbacks.epoch_bar()(label, epochs, steps))
    return out


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
                    num_classes: int, alpha: float, temperature: float,
                    held_out: dict[str, typing.Iterable[str]] | None = None) -> np.ndarray:
    """Soft targets: ``alpha`` x one-hot + (1 - alpha) x the teachers' tempered probabilities.

    Each teacher (a trained run, e.g. at a larger input size) sees each image at its own size
    and colour; predictions are matched to the student's images by file path. Several teachers
    are an ensemble: their probabilities are averaged before tempering.

    Raises:
        FacemaskError: a teacher lacks images, or saw what the student holds out
            (``held_out``: the student's ``"val"`` and ``"test"`` image paths): the teacher
            trained on a validation or test image, or chose its epoch on a test image. Its
            targets would carry them into the student's training, and the student's figures would
            no longer be held-out ones. A teacher of the same split shares the validation set,
            which is fine.
    """
    from facemask_edge._tf import keras
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.splits import read_split_file
    from facemask_edge.artifacts.run import Run

    dirs = teacher_dirs(teacher)
    val, test = (set((held_out or {}).get(part, ())) for part in ("val", "test"))
    probs = np.zeros((len(paths), num_classes), np.float64)
    for teacher_dir in dirs:
        tcfg = Run(teacher_dir).config
        split_file = Path(teacher_dir) / "split.json"
        if (val or test) and split_file.is_file():
            tsplit = read_split_file(split_file)
            t_train, t_val = ({p for p, _ in tsplit[part]} for part in ("train", "val"))
            seen = sorted((t_train & (val | test)) | (t_val & test))
            if seen:
                raise FacemaskError(
                    f"teacher {teacher_dir} trained or chose its epoch on {len(seen)} of this run's held-out "
                    f"images (first: {seen[0]}; its split is seed {tsplit.get('seed')}, {tsplit.get('scheme')})",
                    "train the teacher on this run's split: the same data, --split and --seed")
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


def train(cfg: TrainConfig, callbacks: list | None = None) -> dict:
    """Train a run: scan, split, build, stage 1 + stage 2, evaluate, and write the run folder.

    Writes ``model.keras``, ``labels.txt``, ``split.json``, ``manifest.json``, ``skipped.txt``,
    ``config.json``, ``metrics.json``, ``confusion_matrix.png`` and ``training_curves.png``.

    Training into a folder that already holds a trained run replaces it: what was made from the
    old float model (QAT model, int8 models and cards, profiles, evaluation) is removed first, and
    the log says so. After every epoch the model, the optimizer (its step count is the learning
    rate schedule's position), the best-epoch record, the stage and the epoch are saved in
    ``RUN_DIR/train_checkpoint/``; training the same options on the same data again (after a
    Ctrl-C or a crash) resumes after the last completed epoch. The folder goes when training ends.

    Args:
        cfg: the options.
        callbacks: extra Keras callbacks for every ``fit`` (progress display, tests).

    Returns:
        The metrics dictionary (also in ``metrics.json``).
    """
    from facemask_edge._tf import keras, library_versions, seed_everything
    from facemask_edge.data.ingest import scan_dataset
    from facemask_edge.data.splits import make_split, save_split, split_indices
    from facemask_edge.metrics import classification_metrics
    from facemask_edge.plots import plot_confusion, plot_curves
    from facemask_edge.artifacts.files import sha256_file, write_json
    from facemask_edge.artifacts.run import Run
    from facemask_edge.train.model import ModelSpec, build_model
    from facemask_edge.train.tracking import EnergyMeter, WandbRun

    t_start = time.monotonic()
    class_weights(np.zeros(0, np.int64), 1, cfg.class_weight)  # an unknown mode fails before the scan
    if cfg.near_duplicates is not None:
        from facemask_edge.data.hygiene import check_distance

        check_distance(cfg.near_duplicates)  # before the scan too
    strategy, chief = _strategy(cfg.distribute)
    out = Path(cfg.out) if chief else Path(tempfile.mkdtemp(prefix="facemask-worker-"))
    k = keras()
    reproducibility = seed_everything(cfg.seed)

    ds = scan_dataset(cfg.data, size=cfg.size, color=cfg.color,  # bad data: nothing written yet
                      exclude_noncommercial=cfg.exclude_noncommercial)
    log(ds.summary_line())
    out.mkdir(parents=True, exist_ok=True)
    if chief:
        gone = Run(out).clear_derived()
        if gone:
            log(f"{out} already held a trained run: removed what was made from its model "
                f"({', '.join(gone)}); convert again after training")
    ds.write_manifest(out)
    fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
    split = make_split(ds, cfg.split, cfg.seed, fractions, group_by=cfg.group_by,
                       near_duplicates=cfg.near_duplicates)
    split_path = save_split(split, out)
    idx = split_indices(ds, split)
    classes = ds.classes
    (out / "labels.txt").write_text("".join(c + "\n" for c in classes))
    config = asdict(cfg)
    config["data"] = _resolved_data(cfg.data)
    config["data_root"] = str(ds.root)
    config["classes"] = classes
    write_json(out / "config.json", config)
    # Resuming is safe only for the same options on the same images in the same split.
    key = _key_of({k_: v for k_, v in config.items() if k_ not in ("out", "wandb", "energy")},
                  sha256_file(out / "manifest.json"), sha256_file(split_path))
    ckpt = _Checkpoint(out / CHECKPOINT, key) if chief and not cfg.distribute else None
    if chief and cfg.distribute:
        log(f"--distribute {cfg.distribute}: no per-epoch checkpoint; an interrupted training starts over")
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
                                        len(classes), cfg.distill_alpha, cfg.distill_temperature,
                                        held_out={n: [ds.items[i].path for i in idx[n]] for n in ("val", "test")})
    weights = class_weights(y["train"], nc, cfg.class_weight)
    if weights:
        log("class weights (balanced): " + ", ".join(f"{c} {weights[i]:.2f}" for i, c in enumerate(classes)))
    train_ds = make_dataset(x["train"], train_targets, nc, bs, True, cfg.seed, cfg.augment, cfg.camera_augment)
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
    steps_done = {}
    resumed = ckpt.load() if ckpt else None
    resumed_from = {"stage": resumed.get("current"), "epoch": resumed.get("epoch")} if resumed else None

    def run_stage(name, epochs, lr, trainable):
        if epochs <= 0:
            return 0
        saved = (resumed or {}).get("stages", {}).get(name)
        if saved and saved["done"]:  # finished before the interruption: its end state is kept
            ckpt.restore(model, name)
            stage_times[name] = saved["seconds"]
            steps_done[name] = saved["steps"]
            for key_, values in saved["history"].items():
                history.setdefault(key_, []).extend(values)
            log(f"  {name}: done before the interruption ({saved['epochs']} epochs), kept")
            return saved["epochs"]
        for layer in model.layers:
            if layer.name in backbone:
                layer.trainable = layer.name in trainable
                if isinstance(layer, k.layers.BatchNormalization) and not cfg.train_bn:
                    layer.trainable = False  # keep pretrained BN statistics
        with strategy.scope():
            steps = max(1, int(np.ceil(len(x["train"]) / bs))) * max(1, epochs)
            schedule = k.optimizers.schedules.CosineDecay(lr, steps, alpha=0.05)
            model.compile(k.optimizers.Adam(schedule), loss=loss, metrics=["accuracy"])
        best = BestWeights(cfg.patience, name)
        first, earlier, seconds = 0, {}, 0.0
        if saved:  # interrupted in this stage: weights, optimizer (schedule position), best epoch
            first, earlier, seconds = ckpt.restore(model, name, best)
            log(f"  {name}: resuming after epoch {first} of {epochs} (step {int(k.backend.get_value(model.optimizer.iterations))} "
                f"of the learning-rate schedule's {steps})")
        t0 = time.monotonic()
        ctx = energy.stage(name) if energy else _null()
        extra = [ckpt.callback(name, best, earlier, seconds)] if ckpt else []
        with ctx:
            h = model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=first, verbose=0,
                          class_weight=weights,
                          callbacks=[*stage_callbacks(out, name, epochs, steps // max(1, epochs), fresh=first == 0),
                                     best, *extra, *(callbacks or [])])
        stage_history = {key_: list(earlier.get(key_, [])) + [float(v) for v in values]
                         for key_, values in h.history.items()}
        stage_times[name] = round(seconds + time.monotonic() - t0, 1)
        steps_done[name] = int(k.backend.get_value(model.optimizer.iterations))
        for key_, values in stage_history.items():
            history.setdefault(key_, []).extend(values)
        wandb.log({f"{name}/{k_}": v[-1] for k_, v in h.history.items()})
        n = len(stage_history.get("loss", []))
        if ckpt:
            ckpt.stage_done(model, name, n, stage_times[name], steps_done[name], stage_history)
        return n

    if cfg.head_epochs > 0:
        log(f"stage 1: feature extractor ({len(backbone)} backbone layers frozen), "
            f"up to {plural(cfg.head_epochs, 'epoch')}")
    n1 = run_stage("feature_extractor", cfg.head_epochs, cfg.head_lr, set())
    unfreeze = backbone if cfg.finetune_layers <= 0 else backbone[-cfg.finetune_layers:]
    if cfg.finetune_epochs > 0:
        log(f"stage 2: fine-tuning the last {len(unfreeze)} backbone layers, "
            f"up to {plural(cfg.finetune_epochs, 'epoch')}")
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
    metrics["optimizer_steps"] = steps_done
    if resumed_from:
        metrics["resumed_from"] = resumed_from
    metrics["wall_seconds"] = round(time.monotonic() - t_start, 1)
    metrics["energy"] = energy.report() if energy else {"available": False}
    metrics["history"] = history
    metrics["reproducibility"] = {**reproducibility, "versions": library_versions()}

    model.save(out / "model.keras")  # every worker saves (a collective op under multi-worker)
    if chief:
        Run(out).record("model.keras", ["config.json", "split.json", "manifest.json"])
        write_json(out / "metrics.json", metrics)
        if "test" in metrics:
            plot_confusion(metrics["test"]["confusion_matrix"], classes, out / "confusion_matrix.png",
                           f"float model, test split ({metrics['test_images']} images): "
                           f"accuracy {metrics['test']['accuracy']:.4f}")
        plot_curves(history, out / "training_curves.png", [n1])
        wandb.finish({f"test_{k_}": metrics["test"][k_] for k_ in ("accuracy", "f1")}
                     if "test" in metrics else {})
        if ckpt:
            ckpt.remove()
    else:
        shutil.rmtree(out, ignore_errors=True)
    return metrics


def _resolved_data(data):
    """``config.json``'s ``data``: the absolute path, or the list of them for several roots."""
    if isinstance(data, (list, tuple)):
        return [str(Path(d).expanduser().resolve()) for d in data] if len(data) > 1 \
            else str(Path(data[0]).expanduser().resolve())
    return str(Path(data).expanduser().resolve())


CHECKPOINT = "train_checkpoint"


def _key_of(*parts) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Checkpoint:
    """``RUN_DIR/train_checkpoint/``: the state after the last completed epoch.

    ``state.json`` names the stage, the epochs done, the history so far and the TF checkpoint
    (model and optimizer variables; the optimizer's step count is the schedule's position). It is
    written after the checkpoint files, and two checkpoint names alternate, so a kill at any
    moment leaves the previous epoch's state whole.
    """

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.state: dict = {"key": key, "stages": {}}

    def load(self) -> dict | None:
        """The saved state if it belongs to this training (logged either way), else None."""
        from facemask_edge.artifacts.files import read_json

        f = self.path / "state.json"
        if not f.is_file():
            return None
        try:
            state = read_json(f)
        except ValueError:
            state = {}
        if state.get("key") != self.key:
            log(f"{self.path.name}/ is from other options or data: training starts over")
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        self.state = state
        log(f"resuming the interrupted training: {state.get('current')} epoch {state.get('epoch')} "
            "was the last one completed")
        return state

    def _write(self, model, prefix: str, optimizer: bool) -> None:
        from facemask_edge._tf import tf

        self.path.mkdir(parents=True, exist_ok=True)
        parts = {"model": model}
        if optimizer:
            parts["optimizer"] = model.optimizer
        tf().train.Checkpoint(**parts).write(str(self.path / prefix))

    def _save_state(self) -> None:
        from facemask_edge.artifacts.files import write_json

        write_json(self.path / "state.json", self.state)

    def restore(self, model, stage: str, best=None):
        """Load a stage's saved variables into ``model`` (and ``best``'s record).

        Returns:
            ``(epochs done, history so far, seconds so far)`` of an unfinished stage.
        """
        from facemask_edge._tf import tf

        st = self.state["stages"][stage]
        if st["done"]:
            tf().train.Checkpoint(model=model).read(str(self.path / st["prefix"])).expect_partial()
            return st["epochs"], st["history"], st["seconds"]
        # Slots must exist before reading, or Adam's moments would be restored lazily (never).
        model.optimizer.build(model.trainable_variables)
        tf().train.Checkpoint(model=model, optimizer=model.optimizer).read(
            str(self.path / st["prefix"])).assert_existing_objects_matched()
        if best is not None:
            b = st["best"]
            best.best, best.best_epoch, best.wait = tuple(b["best"]), b["best_epoch"], b["wait"]
            if b["best_epoch"] >= 0:
                with np.load(self.path / "best.npz") as z:
                    best.best_weights = [z[f"w{i}"] for i in range(len(z.files))]
        return st["epochs"], st["history"], st["seconds"]

    def callback(self, stage: str, best, earlier: dict, seconds: float):
        """A Keras callback that saves the state after each epoch of ``stage``."""
        from facemask_edge._tf import keras

        ck = self

        class _Save(keras().callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.t0 = time.monotonic()
                self.hist = {k_: list(v) for k_, v in earlier.items()}

            def on_epoch_end(self, epoch, logs=None):
                for k_, v in (logs or {}).items():
                    self.hist.setdefault(k_, []).append(float(v))
                st = ck.state["stages"].get(stage, {})
                prefix = "epoch-b" if st.get("prefix") == "epoch-a" else "epoch-a"
                ck._write(self.model, prefix, optimizer=True)
                if best.best_epoch == epoch:  # a new best epoch: keep its weights too
                    tmp = ck.path / "best.tmp.npz"
                    np.savez(tmp, **{f"w{i}": w for i, w in enumerate(best.best_weights)})
                    tmp.replace(ck.path / "best.npz")
                ck.state["stages"][stage] = {
                    "done": False, "prefix": prefix, "epochs": epoch + 1, "history": self.hist,
                    "seconds": round(seconds + time.monotonic() - self.t0, 1),
                    "best": {"best": list(best.best), "best_epoch": best.best_epoch, "wait": best.wait}}
                ck.state.update(current=stage, epoch=epoch + 1)
                ck._save_state()

        return _Save()

    def stage_done(self, model, stage: str, epochs: int, seconds: float, steps: int, history: dict) -> None:
        """Record a finished stage with its final (best-epoch) weights."""
        self._write(model, f"end-{stage}", optimizer=False)
        self.state["stages"][stage] = {"done": True, "prefix": f"end-{stage}", "epochs": epochs,
                                       "seconds": seconds, "steps": steps, "history": history}
        self.state.update(current=stage, epoch=epochs)
        self._save_state()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
