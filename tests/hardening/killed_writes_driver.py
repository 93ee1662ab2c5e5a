"""Kills writers with SIGKILL at spread-out moments; used by test_killed_writes.py.

`python -m tests.hardening.killed_writes_driver write ROOT`: one process imports tfmodels once and forks a
writer per attempt (TensorFlow has run no op in this process, so a forked child starts it cleanly, as a fresh
process would, without paying the import again). A first child writes the previous copies and measures how long
each new write takes; then each attempt's child signals the start of its write, and is SIGKILLed after a
fraction (spread over 0..1) of that measured time. Scenarios: save_pretrained between our format and the HF one
(both ways, single and sharded; the new model has another config shape, so a new config beside old weights
would not load), `export`, and a training job killed ten times and resumed until it finishes.

`python -m tests.hardening.killed_writes_driver verify ROOT`: a fresh process loads every directory the kills
left and writes what it found to ROOT/verified.json.
"""
import json
import os
import shutil
import signal
import sys
import time

import numpy as np

import tfmodels
from tfmodels.training import callbacks, recipe as recipe_lib

KILLS = 10
VOCAB = 60_000  # a tiny model with a big vocabulary: a save takes a measurable time
# One layer: every writer, and the verifying loads, build and trace the model, at a cost that grows with its depth.
OLD = {"vocab_size": VOCAB, "intermediate_size": 37, "num_hidden_layers": 1}
NEW = {"vocab_size": VOCAB, "intermediate_size": 41, "num_hidden_layers": 1}  # new config + old weights: no load
# (previous format, new format): our Keras format or HF safetensors, single or sharded (max GB per shard)
SWITCHES = [("ours", "hf"), ("hf", "ours"), ("ours-sharded", "hf-sharded"), ("hf-sharded", "ours-sharded"),
            ("hf", "hf-sharded")]
# A shard a little over the embedding table (VOCAB x 32 float32): both writers then need two shards, the table in
# one and the rest in the other (Keras' needs room for the largest variable, HF's gives it a shard of its own).
SHARD_GB = (VOCAB * 32 * 4 + 16_000) / 1024 ** 3
FORMATS = {"ours": {}, "hf": {"hf_format": True}, "ours-sharded": {"max_shard_size": SHARD_GB},
           "hf-sharded": {"hf_format": True, "max_shard_size": SHARD_GB}}
# One step per epoch, so that history.csv (one row per epoch) logs every step's loss; a backup after every step.
# Twelve steps: each of the ten killed processes trains at least one, and the last process the rest.
# With validation: the best-model checkpoint (best/) is written under the kills too. One layer and short inputs:
# each of the twelve processes of the killed run builds the model and traces its steps again.
TRAIN = ["data.limit=48", "data.batch_size=4", "data.eval_limit=4", "data.eval_batch_size=4", "data.max_length=16",
         "model.overrides.num_hidden_layers=1", "training.epochs=12", "training.steps_per_epoch=1",
         "training.checkpoint_every=1", "training.verbose=0", "training.tensorboard=false"]


def model_class():
    return tfmodels.YosoForSequenceClassification


def build(overrides, seed):
    import keras
    keras.utils.set_random_seed(seed)
    config = tfmodels.YosoConfig.from_pretrained(os.path.join(os.path.dirname(tfmodels.__file__), os.pardir,
                                                              "configs", "yoso-tiny.json"), **overrides)
    return model_class()(config).build_model()


def serving_inputs(model):
    return {k: np.asarray(v) for k, v in model.dummy_inputs().items()}


# ---------------------------------------------------------------------------------------------------------------
# forked writers


def fork(target, *args):
    """Run target(signal_fd, *args) in a forked child; returns (pid, read end of its signal pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 1
        try:
            target(write, *args)
            code = 0
        except BaseException:  # noqa: BLE001 - the child reports and exits; the parent checks its status
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def finish(pid, read):
    _, status = os.waitpid(pid, 0)
    os.close(read)
    if os.WEXITSTATUS(status) if os.WIFEXITED(status) else True:
        raise RuntimeError(f"writer {pid} failed ({status})")


def kill_after(pid, read, delay):
    """Wait for the child's start signal, SIGKILL it `delay` seconds later; True when it was killed before it
    signalled the end of its write."""
    if os.read(read, 1) != b"s":  # it ended without writing (a resumed training run with nothing left to do)
        finish(pid, read)
        return False
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    done = os.read(read, 1) == b"d"
    os.close(read)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        raise RuntimeError(f"writer {pid} failed before it was killed")
    return not done


def prepare(fd, root):
    """Previous copies (saved and exported), reference weights and outputs, and the time of each new write."""
    old, new = build(OLD, 1), build(NEW, 2)
    np.savez(os.path.join(root, "reference.npz"), inputs=serving_inputs(old)["input_ids"],
             logits_old=old(serving_inputs(old))["logits"].numpy(),
             logits_new=new(serving_inputs(new))["logits"].numpy(),
             **{f"old_{i}": w.numpy() for i, w in enumerate(old.weights)},
             **{f"new_{i}": w.numpy() for i, w in enumerate(new.weights)})
    timings = {}
    for fmt, options in FORMATS.items():
        old.save_pretrained(os.path.join(root, "previous", fmt), **options)
        started = time.perf_counter()
        new.save_pretrained(os.path.join(root, "scratch", fmt), **options)
        timings[fmt] = time.perf_counter() - started
    old.export(os.path.join(root, "previous", "export", "1"))
    started = time.perf_counter()
    new.export(os.path.join(root, "scratch", "export", "1"))
    timings["export"] = time.perf_counter() - started
    with open(os.path.join(root, "timings.json"), "w") as f:
        json.dump(timings, f)


def save_new(fd, directory, fmt):
    model = build(NEW, 2)
    os.write(fd, b"s")
    model.save_pretrained(directory, **FORMATS[fmt])
    os.write(fd, b"d")


def export_new(fd, directory):
    model = build(NEW, 2)
    os.write(fd, b"s")
    model.export(directory)
    os.write(fd, b"d")


def writes(root):
    pid, read = fork(prepare, root)
    finish(pid, read)
    with open(os.path.join(root, "timings.json")) as f:
        timings = json.load(f)
    attempts = []
    for k in range(KILLS):
        fraction = (k + 0.5) / KILLS
        previous, new = SWITCHES[k % len(SWITCHES)]
        directory = os.path.join(root, "saves", str(k), "checkpoint")
        shutil.copytree(os.path.join(root, "previous", previous), directory)
        pid, read = fork(save_new, directory, new)
        killed = kill_after(pid, read, fraction * timings[new])
        attempts.append({"kind": "save", "path": directory, "previous": previous, "new": new, "fraction": fraction,
                         "killed_midway": killed})
    for k in range(KILLS):
        fraction = (k + 0.5) / KILLS
        directory = os.path.join(root, "exports", str(k), "export", "1")
        shutil.copytree(os.path.join(root, "previous", "export", "1"), directory)
        pid, read = fork(export_new, directory)
        killed = kill_after(pid, read, fraction * timings["export"])
        attempts.append({"kind": "export", "path": directory, "fraction": fraction, "killed_midway": killed})
    return attempts


# ---------------------------------------------------------------------------------------------------------------
# training


def signals(fd, times_path=None):
    """A callback that signals the end of this process's first epoch ("s": the kill clock starts there, once the
    process has started up, traced its steps, and written that epoch's log row, best model and backup: the
    callbacks the job runs before extra ones) and the end of training ("d"); with `times_path`, it logs when
    each epoch (here one step) ended."""
    import keras

    class Signal(keras.callbacks.Callback):
        times = []

        def on_epoch_end(self, epoch, logs=None):
            if not self.times:
                os.write(fd, b"s")
            self.times.append(time.perf_counter())

        def on_train_end(self, logs=None):
            if times_path:
                with open(times_path, "w") as f:
                    json.dump(self.times, f)
            os.write(fd, b"d")

    return Signal()


def train(fd, output_dir, times_path=None):
    from tfmodels.training import runner
    recipe = recipe_lib.load_recipe("demo-xlm-roberta-xl-sentiment", TRAIN + [f"training.output_dir={output_dir}"])
    runner.train(recipe, extra_callbacks=[signals(fd, times_path)], evaluate_after=False, export_after=False)


def complete(output_dir):
    return os.path.isfile(os.path.join(output_dir, "final", "config.json")) and not os.path.exists(
        os.path.join(output_dir, "checkpoints"))


def training(root):
    """An uninterrupted run, then a run killed ten times and resumed until it ends. Each killed process first
    trains one step and backs it up (so that every restart resumes), then is killed at a fraction (spread over
    0..1) of one step's time (train step, validation, log row, best model, backup) into its next step."""
    reference = os.path.join(root, "train", "uninterrupted")
    times_path = os.path.join(root, "train_times.json")
    pid, read = fork(train, reference, times_path)
    os.read(read, 1)
    finish(pid, read)
    with open(times_path) as f:
        step_time = float(np.median(np.diff(json.load(f))))
    killed_dir = os.path.join(root, "train", "killed")
    kills = []
    for k in range(KILLS):
        if complete(killed_dir):  # a run that finished before its kill: starting again would train afresh
            break
        fraction = (k + 0.5) / KILLS
        # where this restart resumes: (epoch, steps of it trained), read as the job reads it (a backup killed
        # between its two renames included)
        resumed_from = callbacks.resume_point(os.path.join(killed_dir, "checkpoints"))
        pid, read = fork(train, killed_dir)
        kills.append({"fraction": fraction, "resumed_from": resumed_from,
                      "killed_midway": kill_after(pid, read, fraction * step_time)})
    if not complete(killed_dir):
        pid, read = fork(train, killed_dir)  # the last run is left to finish
        os.read(read, 1)
        finish(pid, read)
    return {"reference": reference, "killed": killed_dir, "kills": kills, "step_time": step_time}


# ---------------------------------------------------------------------------------------------------------------
# verification, in a fresh process


def verify(root):
    import tensorflow as tf
    from tfmodels.core import atomic
    reference = np.load(os.path.join(root, "reference.npz"))
    with open(os.path.join(root, "attempts.json")) as f:
        attempts = json.load(f)
    for attempt in attempts["writes"]:
        try:
            if attempt["kind"] == "save":
                model = model_class().from_pretrained(attempt["path"])
                weights = [w.numpy() for w in model.weights]
                attempt["found"] = next((version for version in ("old", "new") if len(weights) == sum(
                    k.startswith(version + "_") for k in reference.files) and all(np.array_equal(
                        w, reference[f"{version}_{i}"]) for i, w in enumerate(weights))), "neither")
            else:
                served = tf.saved_model.load(atomic.readable_path(attempt["path"])).signatures["serving_default"]
                logits = served(input_ids=tf.constant(reference["inputs"]),
                                attention_mask=tf.ones_like(reference["inputs"]))["logits"].numpy()
                attempt["found"] = next((version for version in ("old", "new") if np.allclose(
                    logits, reference[f"logits_{version}"], atol=1e-5)), "neither")
                parent = os.path.dirname(attempt["path"])
                attempt["visible_versions"] = sorted(n for n in os.listdir(parent) if not n.startswith("."))
        except Exception as error:  # noqa: BLE001 - reported to the test, which fails on it
            attempt["found"] = f"error: {type(error).__name__}: {error}"
    run = attempts["training"]
    final = {}
    for name in ("reference", "killed"):
        model = tfmodels.XLMRobertaXLForSequenceClassification.from_pretrained(os.path.join(run[name], "final"))
        final[name] = [w.numpy() for w in model.weights]
    run["final_weights_equal"] = len(final["reference"]) == len(final["killed"]) and all(
        np.array_equal(a, b) for a, b in zip(final["reference"], final["killed"]))
    run["final_max_difference"] = max(float(np.max(np.abs(a - b))) for a, b in zip(final["reference"],
                                                                                      final["killed"]))
    run["history"] = {name: read_csv(os.path.join(run[name], "history.csv")) for name in ("reference", "killed")}
    with open(os.path.join(root, "verified.json"), "w") as f:
        json.dump(attempts, f, indent=1)


def read_csv(path):
    import csv
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def main(mode, root):
    if mode == "write":
        os.makedirs(root, exist_ok=True)
        attempts = {"writes": writes(root), "training": training(root)}
        with open(os.path.join(root, "attempts.json"), "w") as f:
            json.dump(attempts, f, indent=1)
    else:
        verify(root)


if __name__ == "__main__":
    main(*sys.argv[1:])
