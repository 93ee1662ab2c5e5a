"""The shared core: outputs, configs, losses (against torch), checkpoint I/O and reporting, layer helpers."""
import json
import os

import keras
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tfmodels.core import checkpoint as ckpt
from tfmodels.core import layers, losses
from tfmodels.core.outputs import MaskedLMOutput, define_output
from tfmodels.core.safetensors_io import SafetensorsFile, write_safetensors

torch = pytest.importorskip("torch")

TINY = dict(vocab_size=99, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20,
            max_position_embeddings=32)


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def test_output_access_styles_and_tree_flattening():
    logits = tf.ones([2, 3])
    out = MaskedLMOutput(logits=logits, hidden_states=(tf.zeros([1]), tf.zeros([2])))
    assert out.logits is logits and out["logits"] is logits and out[0] is logits
    assert out.loss is None and "loss" not in out and out.attentions is None
    assert list(out.keys()) == ["logits", "hidden_states"] and len(out.to_tuple()) == 2
    out.loss = tf.constant(1.0)
    assert list(out.keys()) == ["loss", "logits", "hidden_states"]
    with pytest.raises(AttributeError):
        out.not_a_field  # noqa: B018
    with pytest.raises(ValueError, match="no field"):
        MaskedLMOutput(start_logits=logits)
    rebuilt = tf.nest.map_structure(lambda t: t * 2, out)
    assert isinstance(rebuilt, MaskedLMOutput) and float(rebuilt.loss) == 2.0
    rebuilt = keras.tree.map_structure(lambda t: t + 1, out)
    assert isinstance(rebuilt, MaskedLMOutput) and float(rebuilt.loss) == 2.0
    custom = define_output("MyOutput", ("loss", "scores"))
    assert custom(scores=logits).scores is logits


# ----------------------------------------------------------------------------------------------------------------
# Configs


def test_config_unknown_keys_hf_keys_and_labels(tmp_path):
    with pytest.raises(ValueError, match="Unknown config key"):
        tfmodels.XLMRobertaXLConfig(foo=1)
    lenient = tfmodels.XLMRobertaXLConfig(foo=1, strict=False)
    assert lenient.extra == {"foo": 1} and lenient.to_dict()["foo"] == 1
    hf_style = {"model_type": "xlm-roberta-xl", "architectures": ["XLMRobertaXLForMaskedLM"], "dtype": "float32",
                "transformers_version": "4.57.6", "output_past": True, "id2label": {"0": "neg", "1": "pos"},
                **TINY}
    path = os.path.join(str(tmp_path), "config.json")
    with open(path, "w") as f:
        json.dump(hf_style, f)
    config = tfmodels.XLMRobertaXLConfig.from_pretrained(str(tmp_path))
    assert config.id2label == {0: "neg", 1: "pos"} and config.label2id == {"neg": 0, "pos": 1}
    assert config.extra["transformers_version"] == "4.57.6"
    assert tfmodels.XLMRobertaXLConfig.from_pretrained(str(tmp_path), num_labels=4).num_labels == 4
    with pytest.raises(ValueError, match="model_type"):
        tfmodels.XLMRobertaXLConfig.from_dict({**hf_style, "model_type": "bert"})
    with pytest.raises(ValueError, match="probability"):
        tfmodels.XLMRobertaXLConfig(hidden_dropout_prob=1.5)
    with pytest.raises(ValueError, match="positive integer"):
        tfmodels.XLMRobertaXLConfig(num_hidden_layers=0)


def test_hf_reads_our_config(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = tfmodels.XLMRobertaXLConfig(**TINY, num_labels=3, is_decoder=True)
    config.save_pretrained(str(tmp_path))
    theirs = transformers.XLMRobertaXLConfig.from_pretrained(str(tmp_path))
    assert theirs.hidden_size == 16 and theirs.num_labels == 3 and theirs.is_decoder


# ----------------------------------------------------------------------------------------------------------------
# Losses against torch


def test_losses_match_torch():
    rng = np.random.RandomState(0)
    logits = rng.randn(3, 5, 7).astype(np.float32)
    labels = rng.randint(0, 7, (3, 5))
    labels[0, :2] = -100
    ce = torch.nn.functional.cross_entropy
    expected = ce(torch.tensor(logits).view(-1, 7), torch.tensor(labels).view(-1), ignore_index=-100)
    helpers.assert_close(losses.masked_lm_loss(labels, logits), expected, 1e-6)
    shifted = ce(torch.tensor(logits[:, :-1]).reshape(-1, 7), torch.tensor(labels[:, 1:]).reshape(-1))
    helpers.assert_close(losses.causal_lm_loss(labels, logits), shifted, 1e-6)
    mask = np.ones((3, 5), np.int32)
    mask[2, 3:] = 0
    active = np.where(mask == 1, labels, -100)
    helpers.assert_close(losses.token_classification_loss(labels, logits, mask),
                         ce(torch.tensor(logits).view(-1, 7), torch.tensor(active).view(-1)), 1e-6)
    assert float(losses.cross_entropy(logits, np.full((3, 5), -100))) == 0.0  # no NaN when all are ignored
    start, end = rng.randn(3, 6).astype(np.float32), rng.randn(3, 6).astype(np.float32)
    sp, ep = np.array([1, 9, 2]), np.array([0, 3, 40])
    ignored = 6
    ref = (ce(torch.tensor(start), torch.tensor(sp).clamp(0, ignored), ignore_index=ignored) +
           ce(torch.tensor(end), torch.tensor(ep).clamp(0, ignored), ignore_index=ignored)) / 2
    helpers.assert_close(losses.question_answering_loss(sp, ep, start, end), ref, 1e-6)
    scores = rng.randn(4, 3).astype(np.float32)
    multi = (rng.rand(4, 3) > 0.5).astype(np.float32)
    helpers.assert_close(losses.sequence_classification_loss(multi, scores, None, 3),
                         torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor(scores),
                                                                              torch.tensor(multi)), 1e-6)
    target = rng.randn(4).astype(np.float32)
    helpers.assert_close(losses.sequence_classification_loss(target, scores[:, :1], None, 1),
                         torch.nn.functional.mse_loss(torch.tensor(scores[:, 0]), torch.tensor(target)), 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def test_safetensors_round_trip_including_bfloat16(tmp_path):
    path = os.path.join(str(tmp_path), "t.safetensors")
    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
               "b": np.array([1.5, -2.25], dtype=ml_dtypes.bfloat16), "c": np.array([1, 2], np.int64)}
    write_safetensors(path, tensors, {"format": "pt"})
    f = SafetensorsFile(path)
    assert f.metadata == {"format": "pt"} and sorted(f.keys()) == ["a", "b", "c"]
    for name, value in tensors.items():
        np.testing.assert_array_equal(f.get(name), value)
    from safetensors.torch import load_file
    loaded = load_file(path)  # the reference library reads what we write, bf16 included
    assert loaded["b"].dtype == torch.bfloat16 and loaded["b"].float().tolist() == [1.5, -2.25]


def test_loading_reports_missing_unexpected_and_mismatched(tmp_path):
    config = tfmodels.XLMRobertaXLConfig(**TINY, num_labels=3)
    source = tfmodels.XLMRobertaXLModel(config)
    source.build_model()
    state = ckpt.hf_state_dict(source, source.checkpoint_map, strip_prefix="roberta")
    state["some.extra.weight"] = np.zeros(3, np.float32)
    ckpt.write_hf_weights(state, str(tmp_path), max_shard_bytes=20_000)
    assert os.path.isfile(os.path.join(str(tmp_path), "model.safetensors.index.json"))
    config.save_pretrained(str(tmp_path))
    model, info = tfmodels.XLMRobertaXLForSequenceClassification.from_pretrained(str(tmp_path),
                                                                                  output_loading_info=True)
    assert info.unexpected == ["pooler.dense.bias", "pooler.dense.weight", "some.extra.weight"]
    assert info.missing == ["classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                            "classifier.out_proj.bias"]
    assert np.abs(model.classifier.dense.kernel.numpy()).sum() > 0, "missing weights must be initialised, not zero"
    helpers.assert_close(model.roberta.embeddings.word_embeddings.embeddings,
                         state["embeddings.word_embeddings.weight"], 0)
    bad = dict(state)
    bad["embeddings.word_embeddings.weight"] = np.zeros((98, 16), np.float32)
    ckpt.write_hf_weights(bad, str(tmp_path))
    os.remove(os.path.join(str(tmp_path), "model.safetensors.index.json"))
    with pytest.raises(ValueError, match=r"embeddings\.word_embeddings\.weight checkpoint \(98, 16\)"):
        tfmodels.XLMRobertaXLModel.from_pretrained(str(tmp_path))
    _, info = tfmodels.XLMRobertaXLModel.from_pretrained(str(tmp_path), ignore_mismatched_sizes=True,
                                                         output_loading_info=True)
    assert info.mismatched[0][0].endswith("embeddings.word_embeddings.weight")


def test_pickles_load_without_opt_in_and_bf16_loading(tmp_path):
    transformers = pytest.importorskip("transformers")
    hf_model = transformers.XLMRobertaXLModel(transformers.XLMRobertaXLConfig(**TINY)).eval()
    hf_model.save_pretrained(str(tmp_path), safe_serialization=False)
    with pytest.warns(FutureWarning, match="allow_pickle"):  # the old opt-in is accepted and no longer needed
        tfmodels.XLMRobertaXLModel.from_pretrained(str(tmp_path), allow_pickle=True)
    model = tfmodels.XLMRobertaXLModel.from_pretrained(str(tmp_path))
    ids = np.array([[5, 6, 7, 8], [9, 10, 1, 1]])
    mask = (ids != 1).astype(np.int32)
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids), attention_mask=torch.tensor(mask)).last_hidden_state
    helpers.assert_close(model(input_ids=ids, attention_mask=mask).last_hidden_state, expected)
    half = tfmodels.XLMRobertaXLModel.from_pretrained(str(tmp_path), dtype="bfloat16")
    assert all(v.dtype == "bfloat16" for v in half.weights)
    out = half(input_ids=ids, attention_mask=mask).last_hidden_state
    assert out.dtype == tf.bfloat16
    helpers.assert_close(tf.cast(out, tf.float32), expected, 0.1)


def test_named_variables_follow_torch_names():
    model = tfmodels.XLMRobertaXLForMaskedLM(tfmodels.XLMRobertaXLConfig(**TINY))
    model.build_model()
    names = [n.name for n in ckpt.named_variables(model)]
    assert "roberta.encoder.layer.1.attention.self.query.weight" in names
    assert "roberta.encoder.layer.0.attention.output.dense.bias" in names
    assert "lm_head.bias" in names and not any("decoder" in n for n in names)  # tied to the embeddings
    assert len(names) == len(set(names)) == len(model.weights)


# ----------------------------------------------------------------------------------------------------------------
# Layer helpers


def test_gradient_checkpointing_gives_identical_gradients():
    config = tfmodels.XLMRobertaXLConfig(**TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = tfmodels.XLMRobertaXLForSequenceClassification(config)
    plain.build_model()
    recomputed = tfmodels.XLMRobertaXLForSequenceClassification(config.copy(gradient_checkpointing=True))
    recomputed.build_model()
    for a, b in zip(recomputed.weights, plain.weights):
        a.assign(b)
    ids, mask = helpers.padded_ids(2, 7, 99, 1)
    grads = []
    for model in (plain, recomputed):
        with tf.GradientTape() as tape:
            loss = model(input_ids=ids, attention_mask=mask, labels=np.array([0, 1]), training=True).loss
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b in zip(*grads):
        helpers.assert_close(tf.convert_to_tensor(a), tf.convert_to_tensor(b), 1e-6)


def test_feed_forward_chunking_is_exact():
    config = tfmodels.XLMRobertaXLConfig(**TINY)
    model = tfmodels.XLMRobertaXLModel(config)
    chunked = tfmodels.XLMRobertaXLModel(config.copy(chunk_size_feed_forward=2))
    model.build_model()
    chunked.build_model()
    for a, b in zip(chunked.weights, model.weights):
        a.assign(b)
    ids, mask = helpers.padded_ids(2, 8, 99, 1)
    helpers.assert_close(chunked(input_ids=ids, attention_mask=mask).last_hidden_state,
                         model(input_ids=ids, attention_mask=mask).last_hidden_state, 1e-6)
    with pytest.raises(ValueError, match="chunk_size_feed_forward"):
        layers.apply_chunking(lambda x: x, 3, tf.zeros([1, 8, 4]))
