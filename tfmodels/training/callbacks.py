"""Callbacks of the training job.

- ResumableBackup: keras.callbacks.BackupAndRestore (weights + optimizer state every `save_freq` steps) that
  also resumes *inside* an epoch. Keras restores the epoch only and replays it from its first batch; here the
  data stream given to `fit` already starts at the first batch the interrupted run had not trained on
  (`resume_point` tells the job where), and the first `skip` steps of the resumed epoch are passed over without
  training, so a resumed run trains exactly the steps an uninterrupted one would, on the same batches.
- EvaluationCallback: full validation-set metrics (tfmodels.training.evaluation) into the epoch logs as `val_*`.
- BestModelCheckpoint: `save_pretrained` of the best model so far by a monitored `val_*` value (kept across
  resumes), used for the final evaluation and the export.
- TrainingCurves: `curves.png` beside the CSV log, redrawn from that log after every epoch (so a resumed run
  shows its earlier epochs too): one panel per quantity (loss, then each metric), train and validation
  against the epoch. Needs matplotlib (the `plot` extra); without it, one warning and no picture.
"""
import csv
import json
import math
import os

import keras

from tfmodels.core import atomic
from tfmodels.core.logging import logger, warn_once
from tfmodels.training import evaluation

METADATA_FILE = "training_metadata.json"


def resume_point(backup_dir):
    """(epoch, batches already trained in that epoch) from a BackupAndRestore folder; (0, 0) if none."""
    atomic.recover(backup_dir)  # a backup write killed between its two renames (see ResumableBackup._save_model)
    path = os.path.join(backup_dir, METADATA_FILE)
    if not os.path.isfile(path):
        return 0, 0
    with open(path, encoding="utf-8") as f:
        metadata = json.load(f)
    epoch = int(metadata.get("epoch", 0))
    batch = int(metadata.get("batch", 0))
    # "batch" is the index of the last batch trained in `epoch` when the backup was written (0 right after an
    # epoch ended, when `epoch` already names the next one and nothing of it was trained).
    # Keras' own metadata lacks "mid_epoch": there, batch 0 means an epoch boundary.
    trained = batch + 1 if metadata.get("mid_epoch", batch > 0) else 0
    return epoch, trained


def truncate_history(csv_path, epoch):
    """Drop the rows of epochs >= `epoch` (and a row cut short by a kill) from a CSVLogger file: a run resumed
    from a backup of `epoch` logs those epochs again, so each epoch keeps exactly one row."""
    if not os.path.isfile(csv_path):
        return
    with open(csv_path, encoding="utf-8", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    if not lines:
        return
    kept = [line for line in lines[1:] if line.endswith("\n") and line.split(",", 1)[0].strip().isdigit()
            and int(line.split(",", 1)[0]) < epoch]
    if len(kept) != len(lines) - 1:
        atomic.write_text(csv_path, "".join(lines[:1] + kept))


class ResumableBackup(keras.callbacks.BackupAndRestore):
    """The backup folder is left in place when training ends: the job removes it (`remove`) only once the final
    model is saved, so that a run killed in between resumes at its end instead of starting afresh."""

    def __init__(self, backup_dir, save_freq, steps_per_epoch):
        super().__init__(backup_dir, save_freq=save_freq, delete_checkpoint=False)
        self.steps_per_epoch = steps_per_epoch
        self.skip = 0
        self._mid_epoch = False
        self._save_at_epoch_end = False

    def on_train_begin(self, logs=None):
        epoch, trained = resume_point(self.backup_dir)
        super().on_train_begin(logs)
        if trained:
            self.skip = min(trained, self.steps_per_epoch)
            self._install_skipping()
            logger.info(f"resuming at epoch {epoch + 1}, step {self.skip} of {self.steps_per_epoch} "
                        f"(optimizer step {int(self.model.optimizer.iterations.numpy())})")
        elif os.path.isfile(os.path.join(self.backup_dir, METADATA_FILE)):
            logger.info(f"resuming at the start of epoch {epoch + 1} "
                        f"(optimizer step {int(self.model.optimizer.iterations.numpy())})")

    def _install_skipping(self):
        model = self.model
        train_function = model.train_function
        remaining = [self.skip]

        def skipping(iterator):
            if remaining[0] > 0:
                remaining[0] -= 1
                if remaining[0] == 0:
                    model.train_function = train_function
                return {}
            return train_function(iterator)

        model.train_function = skipping

    def on_train_batch_end(self, batch, logs=None):
        self._mid_epoch = True
        if batch + 1 < self.steps_per_epoch:
            super().on_train_batch_end(batch, logs)
        else:
            # A backup due after an epoch's last batch is written at the epoch's end instead, after the epoch's
            # logs (the job places this callback after the CSV log and the best-model checkpoint): a backup never
            # says "epoch done" while that epoch's row may be missing from the log.
            self._save_at_epoch_end = self._should_save_on_batch(batch)

    def on_epoch_end(self, epoch, logs=None):
        self._mid_epoch = False
        super().on_epoch_end(epoch, logs)
        if self._save_at_epoch_end:
            self._save_at_epoch_end = False
            self._save_model()

    def _save_model(self):
        # Keras writes the weights, then the metadata, in place: a kill in between leaves a half-written h5 or
        # new weights beside the previous step count (a resume would train those steps twice). Both are written
        # into a new folder that replaces the backup whole instead (core.atomic).
        with atomic.replacing_directory(self.backup_dir) as staging:
            self.model.save_weights(os.path.join(staging, os.path.basename(self._weights_path)))
            metadata = {"epoch": self._current_epoch, "batch": self._last_batch_seen, "mid_epoch": self._mid_epoch,
                        "optimizer_step": int(self.model.optimizer.iterations.numpy())}
            with open(os.path.join(staging, METADATA_FILE), "w", encoding="utf-8") as f:
                json.dump(metadata, f)

    def remove(self):
        atomic.remove_directory(self.backup_dir)


class EvaluationCallback(keras.callbacks.Callback):
    def __init__(self, dataset, task, batch_size, tokenizer=None, label_names=None, verbose=True):
        super().__init__()
        self.dataset = dataset
        self.task = task
        self.batch_size = batch_size
        self.tokenizer = tokenizer
        self.label_names = label_names
        self.verbose = verbose

    def on_epoch_end(self, epoch, logs=None):
        results = evaluation.evaluate(self.model, self.dataset, self.task, self.batch_size, self.tokenizer,
                                      self.label_names)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in results.items()})
        if self.verbose:
            print(f"epoch {epoch + 1} validation: " + ", ".join(f"{k} {v:.4f}" for k, v in results.items()),
                  flush=True)


class BestModelCheckpoint(keras.callbacks.Callback):
    def __init__(self, directory, monitor, mode="max", preprocessor=None):
        """preprocessor: the tokenizer (or image pipeline settings) saved beside the best model."""
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.mode = mode
        self.preprocessor = preprocessor
        self.state_path = os.path.join(directory, "best.json")
        self.best = -math.inf if mode == "max" else math.inf
        atomic.recover(directory)
        if os.path.isfile(self.state_path):
            with open(self.state_path, encoding="utf-8") as f:
                self.best = json.load(f)["value"]

    def _better(self, value):
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            logger.warning(f"best-model checkpoint: {self.monitor} not in the logs ({', '.join(logs or {})})")
            return
        if self._better(float(value)):
            self.best = float(value)
            # model, preprocessor and best.json replace the previous best together (core.atomic), so that a
            # resumed run compares against the value of the model that is actually there
            with atomic.replacing_directory(self.directory) as staging:
                self.model.save_pretrained(staging)
                if self.preprocessor is not None:
                    self.preprocessor.save_pretrained(staging)
                with open(os.path.join(staging, os.path.basename(self.state_path)), "w", encoding="utf-8") as f:
                    json.dump({"monitor": self.monitor, "value": self.best, "epoch": epoch + 1}, f)


class FailAfterSteps(keras.callbacks.Callback):
    """Raise after `steps` training steps: simulates a crash (used by the resume tests and `--fail-after`)."""

    def __init__(self, steps):
        super().__init__()
        self.steps = int(steps)
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.steps:
            raise SimulatedCrash(f"simulated crash after {self.seen} steps")


class SimulatedCrash(RuntimeError):
    pass


class TensorBoardScalars(keras.callbacks.Callback):
    """TensorBoard event files with the epoch metrics (train/ and validation/ runs, `epoch_<name>` tags, as
    keras.callbacks.TensorBoard names them) and the learning rate. Written with core TF summary ops only, so it
    works without the `tensorboard` package installed (which is needed to *view* the logs)."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writers = {}

    def _writer(self, run):
        import tensorflow as tf
        if run not in self._writers:
            self._writers[run] = tf.summary.create_file_writer(os.path.join(self.log_dir, run))
        return self._writers[run]

    @staticmethod
    def _scalar(tag, value, step):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2
        metadata = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="scalars"))
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=metadata)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            logs["learning_rate"] = float(optimizer.learning_rate.numpy()) if hasattr(
                optimizer.learning_rate, "numpy") else float(optimizer.learning_rate)
        for run, items in (("train", {k: v for k, v in logs.items() if not k.startswith("val_")}),
                           ("validation", {k[4:]: v for k, v in logs.items() if k.startswith("val_")})):
            if not items:
                continue
            with self._writer(run).as_default():
                for name, value in items.items():
                    try:
                        self._scalar(f"epoch_{name}", value, epoch)
                    except (TypeError, ValueError):
                        continue
            self._writers[run].flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}


def pyplot(purpose):
    """matplotlib.pyplot on the file-only Agg backend, or None (with one warning naming `purpose` and the
    extra) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        warn_once(("matplotlib", purpose), f"matplotlib is not installed: no {purpose} "
                  "(pip install 'tfmodels[plot]' for the pictures)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _cell(value):
    """A CSVLogger cell as a float: empty cells and Keras' "NA" (a key missing from an epoch's logs, e.g. every
    `val_*` of a run without validation data) are NaN."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_history(csv_path):
    """{column: [float per epoch row]} from a CSVLogger file (cells without a number are NaN)."""
    with open(csv_path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(_cell(value))
    return columns


def curves_figure(history, title=None):
    """The training-curves figure of a history {column: values} (CSVLogger's columns: `epoch`, `loss`,
    metrics, `val_*`, maybe `learning_rate`): a panel per quantity, train and validation lines."""
    plt = pyplot("training curves")
    if plt is None:
        return None
    epochs = [e + 1 for e in history.get("epoch", range(len(next(iter(history.values()), []))))]
    names = [k for k in history if k not in ("epoch", "learning_rate") and not k.startswith("val_")]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in names]
    names.sort(key=lambda k: (k != "loss", k))
    figure, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        for key, label, style in ((name, "train", "o-"), (f"val_{name}", "validation", "s--")):
            if key in history:
                ax.plot(epochs, history[key], style, label=label, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def save_figure(figure, path):
    """Write the PNG through a temporary file, so a reader never sees a half-written picture."""
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=100)
    os.replace(temporary, path)
    import matplotlib.pyplot as plt
    plt.close(figure)


class TrainingCurves(keras.callbacks.Callback):
    """Redraws `curves.png` (beside `csv_path`) from the CSV log at the end of every epoch; place it after the
    CSVLogger, which has written the epoch's row by then."""

    def __init__(self, csv_path, title=None):
        super().__init__()
        self.csv_path = csv_path
        self.path = os.path.join(os.path.dirname(csv_path), "curves.png")
        self.title = title

    def on_epoch_end(self, epoch, logs=None):
        if not os.path.isfile(self.csv_path):
            return
        figure = curves_figure(read_history(self.csv_path), self.title)
        if figure is not None:
            save_figure(figure, self.path)
