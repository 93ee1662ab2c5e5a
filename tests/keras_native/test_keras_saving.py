""".keras round trips of every head of every family, loaded in a fresh process (keras_saving_driver.py).

Per family, each head is saved alone after `fit` (compiled with Adam, so the file holds the optimizer state)
and inside a functional model (`keras.Model(inputs, Dense(our_model(inputs).field))`, itself fitted one step). One fresh process loads them all with `keras.models.load_model` (safe_mode on) and runs them on the
same padded batch: every output array and every optimizer variable must be bit-identical to the saving process.
One head per family is then trained further and saved with save_pretrained in that process; the special cases
ride along: a model saved before it was ever called and a bfloat16 model (YOSO), an exported SavedModel (YOSO),
Longformer with a global attention mask, XLNet's mems, BEiT's image heads.
"""
import dataclasses
import json
import os
import subprocess
import sys
import traceback

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.keras_native.keras_saving_driver import flat_outputs, optimizer_arrays
from tests.models.beit import test_modeling as beit_tests
from tests.models.longformer.test_modeling import FAMILY as LONGFORMER
from tests.models.mra.test_modeling import FAMILY as MRA
from tests.models.nystromformer.test_modeling import FAMILY as NYSTROMFORMER
from tests.models.xlm_roberta_xl.test_modeling import FAMILY as XLM_ROBERTA_XL
from tests.models.xlnet import test_modeling as xlnet_tests
from tests.models.yoso.test_modeling import FAMILY as YOSO
import tfmodels
from tfmodels import registry
from tfmodels.core import encoder, heads
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.core.modeling import PreTrainedModel
from tfmodels.models.yoso import modeling as yoso_modeling

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Family:
    """heads; config(head); inputs(head, config, labels) -> the padded batch (with labels)."""
    heads: list
    config: object
    inputs: object


# One encoder layer (BEiT's segmentation head taps four, it keeps them): a round trip does not depend on the
# depth, and every layer is built, fitted, saved, loaded and run in each of the ~100 models here.
ONE_LAYER = {"num_hidden_layers": 1}


def _text(family, extra_inputs=None, **overrides):
    def inputs(head, config, labels=False):
        batch = family.inputs(head, config, labels=labels)
        return {**batch, **extra_inputs(batch)} if extra_inputs else batch
    return Family(family.heads(), lambda head: family.config(**ONE_LAYER, **overrides), inputs)


def _longformer_global_attention(batch):
    # Global attention on the first token of every sequence (of every choice for multiple choice).
    mask = np.zeros_like(batch["attention_mask"])
    mask[..., 0] = 1
    return {"global_attention_mask": mask}


def _beit_config(head):
    return beit_tests.tiny_config(head, **({} if head is tfmodels.BeitForSemanticSegmentation else ONE_LAYER))


FAMILIES = {
    "yoso": _text(YOSO),
    "mra": _text(MRA),
    "nystromformer": _text(NYSTROMFORMER),
    "xlm-roberta-xl": _text(XLM_ROBERTA_XL),
    "longformer": _text(LONGFORMER, _longformer_global_attention, attention_window=[4]),
    "xlnet": Family(xlnet_tests.HEADS, lambda head: xlnet_tests.tiny_config(n_layer=1),
                    lambda head, config, labels=False: xlnet_tests.make_inputs(head, config, labels=labels)),
    "beit": Family(beit_tests.HEADS, _beit_config,
                   lambda head, config, labels=False: beit_tests.make_inputs(head, config, labels=labels)),
}


def test_every_registered_family_and_head_is_covered():
    assert set(FAMILIES) == set(registry.families())
    for name, spec in registry.families().items():
        covered = {head.__name__ for head in FAMILIES[name].heads}
        assert {spec.head_class_name(task) for task in spec.tasks()} <= covered, name


class Writer:
    """Saves models and their expected outputs for the fresh process; `check` compares what it loaded."""

    def __init__(self, directory):
        self.directory = directory
        self.entries, self.expected = [], []

    def add(self, model, inputs, label, checks=(), labelled=None):
        index = len(self.entries)
        entry = {"file": f"{index}_{label}.keras", "inputs": f"inputs_{index}.npz", "label": label,
                 "checks": list(checks)}
        np.savez(os.path.join(self.directory, entry["inputs"]), **inputs)
        if labelled is not None:
            entry["labelled"] = f"labelled_{index}.npz"
            np.savez(os.path.join(self.directory, entry["labelled"]), **labelled)
        model.save(os.path.join(self.directory, entry["file"]))
        self.expected.append({**flat_outputs(model(inputs, training=False)), **optimizer_arrays(model)})
        self.entries.append(entry)

    def write_manifest(self):
        with open(os.path.join(self.directory, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(self.entries, f)

    def read_report(self):
        error = os.path.join(self.directory, "error.txt")
        if os.path.exists(error):
            with open(error, encoding="utf-8") as f:
                raise AssertionError(f"loading in the fresh process failed:\n{f.read()}")
        with open(os.path.join(self.directory, "report.json"), encoding="utf-8") as f:
            return json.load(f)

    def assert_bit_exact(self, report, classes):
        for index, (entry, expected) in enumerate(zip(self.entries, self.expected)):
            loaded = dict(np.load(os.path.join(self.directory, f"loaded_{index}.npz")))
            assert report[index]["class"] == classes[index], entry["label"]
            assert sorted(loaded) == sorted(expected), (entry["label"], sorted(loaded), sorted(expected))
            for name, value in expected.items():
                assert loaded[name].dtype == value.dtype and np.array_equal(loaded[name], value), \
                    f"{entry['label']}: {name} differs after loading in a fresh process"


def _fit_one_step(model, inputs, labelled, field):
    # run_eagerly: one step of a tiny model costs less eagerly than tracing a train function for it.
    if isinstance(model, PreTrainedModel) and model.label_names and all(n in labelled for n in model.label_names):
        model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=True)
        model.fit(labelled, batch_size=len(labelled[model.main_input_name]), epochs=1, verbose=0)
    else:  # the bare model (no task loss) and the functional model: a Keras loss on the main output(s)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", run_eagerly=True)
        output = model(inputs)
        prediction = model.main_prediction(output) if isinstance(model, PreTrainedModel) else output
        target = tf.nest.map_structure(lambda value: np.zeros(value.shape, np.float32), prediction)
        model.fit(inputs, target, batch_size=len(next(iter(inputs.values()))), epochs=1, verbose=0)


def _functional(model, inputs, field):
    symbolic = {name: keras.Input(shape=value.shape[1:], dtype=str(value.dtype), name=name)
                for name, value in inputs.items()}
    outputs = keras.layers.Dense(3, name="user_head")(model(symbolic)[field])
    return keras.Model(symbolic, outputs)


def _main_field(model):
    fields = model.output_class.fields
    return next(f for f in ("logits", "start_logits", "start_top_log_probs", "last_hidden_state") if f in fields)


def save_family(family, writer):
    """Writes the family's entries; returns the class each entry must load as."""
    spec, classes = FAMILIES[family], []
    for position, head in enumerate(spec.heads):
        config = spec.config(head)
        model = head(config)
        inputs, labelled = spec.inputs(head, config), spec.inputs(head, config, labels=True)
        field = _main_field(model)
        # Alone, after fit (the optimizer state is saved); the first head with a task loss is trained further
        # and saved with save_pretrained after loading.
        _fit_one_step(model, inputs, labelled, field)
        checks = ("train", "save_pretrained") if position == 1 else ()
        writer.add(model, inputs, f"{head.__name__}_fit", checks, labelled if checks else None)
        # Inside a functional model, itself trained one step.
        functional = _functional(model, inputs, field)
        _fit_one_step(functional, inputs, None, None)
        writer.add(functional, inputs, f"{head.__name__}_functional")
        classes += [head.__name__, "Functional"]
    if family == "yoso":
        head = spec.heads[2]
        config = spec.config(head)
        inputs = spec.inputs(head, config)
        writer.add(head(config), inputs, "never_called", ("export",))
        with dtype_policy_scope("bfloat16"):
            half = head(config)
        writer.add(half, inputs, "bfloat16")
        classes += [head.__name__, head.__name__]
    return classes


def check_family(family, writer, classes):
    report = writer.read_report()
    writer.assert_bit_exact(report, classes)
    trained = next(r for r in report if "train" in r)
    assert np.isfinite(trained["train"]["loss"]) and trained["train"]["changed"] > trained["train"]["trainable"] // 2
    assert next(r for r in report if "save_pretrained" in r)["save_pretrained"]["equal"]
    if family == "yoso":
        assert report[-1]["dtype"] == "bfloat16"
        assert report[-2]["export"]["max_diff"] <= 1e-5


@pytest.mark.slow
def test_keras_round_trip_of_every_head_in_a_fresh_process(tmp_path):
    # One test, not one per family: ONE fresh process loads every family (a process start and the TF import cost
    # several seconds each), and a module fixture would run once per xdist worker. A family's failure is
    # collected, named, and does not stop the others.
    failures, saved = {}, {}
    for family in sorted(FAMILIES):
        writer = Writer(str(tmp_path / family))
        os.makedirs(writer.directory)
        try:
            saved[family] = (writer, save_family(family, writer))
            writer.write_manifest()
        except Exception:
            failures[family] = f"saving failed:\n{traceback.format_exc()}"
    process = subprocess.run([sys.executable, "-m", "tests.keras_native.keras_saving_driver",
                              *(writer.directory for writer, _ in saved.values())],
                             cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert process.returncode == 0, process.stderr[-5000:]
    for family, (writer, classes) in saved.items():
        try:
            check_family(family, writer, classes)
        except Exception:
            failures[family] = traceback.format_exc()
    assert not failures, "\n".join(f"{family}: {failure}" for family, failure in failures.items())


def test_public_layers_serialize_through_keras(tmp_path):
    """The public layers (tfmodels' exported layers and core's skeleton) are registered: their configs round-trip
    with safe_mode on, and a functional model around one saves and loads as .keras with identical outputs. A
    layer holding a Python function refuses to serialize with an error naming the argument."""
    yoso = YOSO.config()
    layers = [tfmodels.XLNetMainLayer(xlnet_tests.tiny_config(), name="xlnet"),
              tfmodels.LongformerSelfAttention(LONGFORMER.config(), 0, name="self"),
              encoder.AttentionBlock(yoso, yoso_modeling.YosoSelfAttention, 1, name="block"),
              yoso_modeling.YosoMainLayer(yoso, add_pooling_layer=False, name="main"),
              heads.ClassificationHead(8, 3, 0.1, 0.02, name="head")]
    for layer in layers:
        data = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
        restored = keras.saving.deserialize_keras_object(data, safe_mode=True)
        assert type(restored) is type(layer) and restored.get_config() == layer.get_config()
    ids = YOSO.inputs(tfmodels.YosoModel, yoso)["input_ids"]
    symbolic = keras.Input(shape=(None,), dtype="int32")
    model = keras.Model(symbolic, keras.layers.Dense(2)(encoder.TextEmbeddings(yoso, 2, name="embeddings")(symbolic)))
    model.save(str(tmp_path / "embeddings.keras"))
    loaded = keras.models.load_model(str(tmp_path / "embeddings.keras"))
    assert np.array_equal(loaded(ids), model(ids))
    with pytest.raises(ValueError, match="tied_embeddings"):
        keras.saving.serialize_keras_object(heads.LMHead(8, 10, 1e-5, 0.02, tied_embeddings=lambda: None))
