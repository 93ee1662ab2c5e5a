"""Weights saved by an earlier version still load and compute the same outputs.

tests/fixtures/saved_weights holds every head of every family saved with `save_pretrained` (our Keras format) by
the code before the text-encoder skeleton moved the families' layers into core (commit cfb692b; written by
scripts/make_saved_weights_fixtures.py), with that code's outputs on a padded batch. A refactor that renames
or reorders a layer or a variable breaks these loads or changes the outputs.
"""
import json
import os

import h5py
import numpy as np
import pytest

import tfmodels

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "saved_weights")
with open(os.path.join(FIXTURES, "written_by.json")) as f:
    HEADS = json.load(f)["heads"]


def _stored_arrays(path):
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    return arrays


def test_every_family_and_head_has_a_fixture():
    families = {name.split("For")[0].replace("LMHeadModel", "").replace("Model", "") for name in HEADS}
    assert families == {"Yoso", "Mra", "Nystromformer", "Longformer", "XLMRobertaXL", "XLNet", "Beit"}
    assert len(HEADS) == 42


@pytest.mark.slow
@pytest.mark.parametrize("name", HEADS)
def test_weights_saved_before_the_skeleton_load_and_give_the_same_outputs(name):
    directory = os.path.join(FIXTURES, name)
    expected = np.load(os.path.join(directory, "expected.npz"))
    model = getattr(tfmodels, name).from_pretrained(directory)
    # Every stored array is one of the model's variables, and the model has no variable the file lacks.
    stored = _stored_arrays(os.path.join(directory, "model.weights.h5"))
    assert len(model.weights) == len(stored)
    assert sorted(float(np.sum(np.abs(a))) for a in stored) == pytest.approx(
        sorted(float(np.sum(np.abs(v.numpy()))) for v in model.weights), rel=0, abs=0)
    inputs = {key[len("input."):]: expected[key] for key in expected.files if key.startswith("input.")}
    outputs = model(inputs, training=False)
    fields = [key[len("output."):] for key in expected.files if key.startswith("output.")]
    assert fields
    for field in fields:
        np.testing.assert_allclose(np.asarray(outputs[field]), expected["output." + field], rtol=0, atol=1e-5,
                                   err_msg=f"{name}.{field}")
