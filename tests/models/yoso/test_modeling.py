"""YOSO behaviour: every head through the shared helpers (expectation mode, the published default), the sampled
path (custom ops, LSH backward) through call styles, fit and export, plus YOSO's own options."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.family_spec import TextFamily
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.ops import dispatch

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")

FAMILY = TextFamily("Yoso", "yoso-tiny.json")
HEADS = FAMILY.heads()
OUTPUTS = {"YosoModel": "BaseModelOutputWithCrossAttentions", "YosoForMaskedLM": "MaskedLMOutput",
           "YosoForSequenceClassification": "SequenceClassifierOutput",
           "YosoForMultipleChoice": "MultipleChoiceModelOutput", "YosoForTokenClassification": "TokenClassifierOutput",
           "YosoForQuestionAnswering": "QuestionAnsweringModelOutput"}


tiny_config, make_inputs, main_field = FAMILY.config, FAMILY.inputs, FAMILY.main_field


def sampled_config(**overrides):
    return tiny_config(use_expectation=False, **overrides)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = tiny_config()
    model = head(config)
    output = helpers.run_call_styles_test(model, make_inputs(head, config), model.input_names)
    assert type(output).__name__ == OUTPUTS[head.__name__]
    if head is not tfmodels.YosoModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


def test_sampled_path_call_styles_and_fit():
    """use_expectation=False: the custom ops in the forward pass and the LSH backward in fit. (The heads differ
    from YOSO-E only above the encoder, which the tests above cover for every head.)"""
    head = tfmodels.YosoForMaskedLM
    config = sampled_config()
    model = head(config)
    assert not keras.src.trainers.trainer.model_supports_jit(model)
    helpers.run_call_styles_test(model, make_inputs(head, config), model.input_names)
    helpers.run_fit_test(model, make_inputs(head, config, labels=True), model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, main_field(head))
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=config.max_position_embeddings)


def test_export_every_head_in_one_fresh_process(tmp_path):
    """All heads (YOSO-E), and a sampled model (fast hash + conv): stock-TF SavedModels whose outputs equal the
    Keras model's. The sampled export uses the twins; inference hashes with a fixed seed, so it reproduces the
    custom-op outputs."""
    jobs = []
    for head in HEADS:
        config = tiny_config()
        jobs.append((head.__name__, head(config), make_inputs(head, config), None, None))
    head, config = tfmodels.YosoForSequenceClassification, sampled_config(conv_window=3)
    jobs.append(("sampled_fast_hash_conv", head(config), make_inputs(head, config), None, None))
    helpers.export_and_check(jobs, tmp_path)


def test_config_validation_round_trip_and_published_sizes(tmp_path):
    with pytest.raises(ValueError, match="hash_code_len"):
        tfmodels.YosoConfig(hash_code_len=0)
    with pytest.raises(ValueError, match="hash_code_len must be in"):
        tfmodels.YosoConfig(hash_code_len=24)
    with pytest.raises(ValueError, match="conv_window"):
        tfmodels.YosoConfig(conv_window=4)
    with pytest.raises(ValueError, match="use_expectation"):
        tfmodels.YosoConfig(use_expectation="yes")
    with pytest.raises(ValueError, match="num_hash"):
        tfmodels.YosoConfig(num_hash=0)
    with pytest.raises(ValueError, match="position_embedding_type"):
        tfmodels.YosoConfig(position_embedding_type="rotary")
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tfmodels.YosoConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="encoder"):
        tfmodels.YosoConfig(is_decoder=True)
    with pytest.raises(ValueError, match="num_hsh.*did you mean 'num_hash'"):
        tfmodels.YosoConfig(num_hsh=3)
    defaults = tfmodels.YosoConfig()
    assert (defaults.use_expectation, defaults.hash_code_len, defaults.num_hash, defaults.conv_window,
            defaults.use_fast_hash, defaults.lsh_backward) == (True, 9, 64, None, True, True)
    config = tiny_config(num_labels=3, conv_window=5)
    config.save_pretrained(str(tmp_path))
    again = tfmodels.YosoConfig.from_pretrained(str(tmp_path))
    assert again == config and again.conv_window == 5
    published = tfmodels.YosoConfig.from_pretrained(os.path.join(CONFIGS, "yoso-4096.json"))
    assert (published.hidden_size, published.num_hidden_layers, published.num_attention_heads,
            published.intermediate_size, published.vocab_size, published.max_position_embeddings) == (
        768, 12, 12, 3072, 50265, 4096)
    assert (published.num_hash, published.hash_code_len, published.use_expectation) == (64, 9, True)
    qa = tfmodels.YosoForQuestionAnswering(tiny_config(num_labels=5))
    assert qa.config.num_labels == 2


def test_sampled_inference_is_reproducible_and_training_samples_afresh():
    config = sampled_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.YosoModel(config)
    inputs = make_inputs(tfmodels.YosoModel, config)
    first = model(**inputs, training=False).last_hidden_state.numpy()
    np.testing.assert_array_equal(model(**inputs, training=False).last_hidden_state.numpy(), first)
    train = [model(**inputs, training=True).last_hidden_state.numpy() for _ in range(2)]
    assert np.abs(train[0] - train[1]).max() > 1e-3  # fresh projections per training step
    for layer in model.yoso.encoder.layer:
        layer.attention.self.inference_seed = None  # the reference's behaviour: sample on every call
    again = [model(**inputs, training=False).last_hidden_state.numpy() for _ in range(2)]
    assert np.abs(again[0] - again[1]).max() > 1e-3


@pytest.mark.parametrize("lsh_backward", [True, False])
def test_sampled_path_custom_op_and_twin_agree_in_model(lsh_backward):
    """Same seeds -> same codes: the custom-op model and the twin model give equal outputs and gradients, eager
    and under XLA (where the twin is used). Head size 9 and length 13: no multiples of 8 or 32."""
    config = sampled_config(hidden_size=36, intermediate_size=20, lsh_backward=lsh_backward,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.YosoForSequenceClassification(config)
    inputs = make_inputs(tfmodels.YosoForSequenceClassification, config, length=13, labels=True)
    model.build_model()
    generators = [layer.attention.self.seed_generator for layer in model.yoso.encoder.layer]

    def run(mode):
        for g in generators:
            g.state.assign([5, 0])
        with dispatch.op_mode(mode):
            inference = model(**inputs, training=False).logits.numpy()
            with tf.GradientTape() as tape:
                loss = model(**inputs, training=True).loss
        grads = tape.gradient(loss, model.trainable_variables)
        return inference, float(loss), [tf.convert_to_tensor(g).numpy() for g in grads]

    custom, twin = run("custom"), run("reference")
    helpers.assert_close(custom[0], twin[0], 1e-5, "logits")
    assert abs(custom[1] - twin[1]) < 1e-5
    for a, b in zip(custom[2], twin[2]):
        helpers.assert_close(a, b, 1e-5, "gradient")
    assert sum(np.abs(g).max() > 0 for g in custom[2]) > 0.8 * len(custom[2])
    if lsh_backward:  # one XLA compilation is enough (the forward pass does not depend on lsh_backward)
        compiled = tf.function(lambda x: model(x, training=False).logits, jit_compile=True)
        helpers.assert_close(compiled({k: v for k, v in inputs.items() if k != "labels"}), custom[0], 1e-5, "XLA")


def test_gaussian_hashing_conv_and_relative_positions_run():
    config = sampled_config(use_fast_hash=False, conv_window=3, position_embedding_type="relative_key")
    model = tfmodels.YosoForMaskedLM(config)
    inputs = make_inputs(tfmodels.YosoForMaskedLM, config, labels=True)
    with tf.GradientTape() as tape:
        loss = model(**inputs, training=True).loss
    grads = dict(zip([v.path for v in model.trainable_variables],
                     tape.gradient(loss, model.trainable_variables)))
    assert np.isfinite(float(loss))
    assert [path for path, g in grads.items() if g is None] == [model.yoso.embeddings.position_embeddings.embeddings.path]
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads.values() if g is not None)
    # relative position types use no position table (as the reference), but keep it as a checkpoint weight
    table = model.yoso.embeddings.position_embeddings.embeddings
    before = model(**inputs, training=False).logits.numpy()
    table.assign(table + 1.0)
    np.testing.assert_allclose(model(**inputs, training=False).logits.numpy(), before, atol=1e-6)


def test_head_mask_scales_each_heads_context():
    config = tiny_config()
    model = tfmodels.YosoModel(config)
    inputs = make_inputs(tfmodels.YosoModel, config)
    plain = model(**inputs, output_attentions=True, training=False)
    ones = model(**inputs, head_mask=np.ones((2, 4), np.float32), output_attentions=True, training=False)
    helpers.assert_close(ones.last_hidden_state, plain.last_hidden_state, 1e-6)
    head_mask = np.ones((2, 4), np.float32)
    head_mask[0, 1] = 0.0
    masked = model(**inputs, head_mask=head_mask, output_attentions=True, training=False)
    context = masked.attentions[0].numpy().reshape(4, 9, 4, 8)
    np.testing.assert_array_equal(context[:, :, 1], 0.0)
    assert np.abs(context[:, :, 0]).max() > 0
    assert np.abs(masked.last_hidden_state.numpy() - plain.last_hidden_state.numpy()).max() > 1e-4


def test_padding_does_not_change_real_tokens_in_either_mode():
    """Padded keys are excluded (unlike the reference, see tests/parity): a sequence padded to 11 tokens gives
    its 6 real tokens the outputs of the unpadded sequence, with the expectation and with sampled hashing (same
    batch size, so the same projections)."""
    for config in (tiny_config(), sampled_config()):
        model = tfmodels.YosoModel(config)
        ids, _ = helpers.padded_ids(1, 6, config.vocab_size, config.pad_token_id, lengths=[6], seed=4)
        alone = model(input_ids=ids, training=False).last_hidden_state.numpy()
        padded = model(input_ids=np.pad(ids, [[0, 0], [0, 5]], constant_values=config.pad_token_id),
                       attention_mask=np.pad(np.ones((1, 6), np.int32), [[0, 0], [0, 5]]),
                       training=False).last_hidden_state.numpy()
        helpers.assert_close(padded[0, :6], alone[0], 1e-5, f"use_expectation={config.use_expectation}")


def test_gradient_checkpointing_and_mixed_precision():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    inputs = make_inputs(tfmodels.YosoForSequenceClassification, config, labels=True)
    grads, weights = [], None
    for checkpointing in (False, True):
        model = tfmodels.YosoForSequenceClassification(config.copy(gradient_checkpointing=checkpointing))
        model.build_model()
        if weights is not None:
            model.set_weights(weights)
        weights = model.get_weights()
        with tf.GradientTape() as tape:
            loss = model(**inputs, training=True).loss
        grads.append([tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)])
    for a, b in zip(*grads):
        helpers.assert_close(a, b, 1e-5, "checkpointed gradient")
    config = sampled_config()  # the attention runs in float32 inside (the LSH ops are float32 ops)
    with dtype_policy_scope("mixed_bfloat16"):
        model = tfmodels.YosoForMaskedLM(config)
    out = model(**make_inputs(tfmodels.YosoForMaskedLM, config), training=False).logits
    assert out.dtype == tf.bfloat16 and np.all(np.isfinite(tf.cast(out, tf.float32).numpy()))
