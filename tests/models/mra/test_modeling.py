"""MRA behaviour: every head through the shared helpers, plus what is special to MRA: any length, padded batches
per example, custom op vs twin (outputs and gradients), XLA, effective attention weights, head mask, configs."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.family_spec import TextFamily
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.ops.block_sparse_attention import mra2_attention
from tfmodels.ops import dispatch

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")

LENGTH = 100  # 4 blocks of 32 after internal padding: 8 of the 16 blocks at high resolution, the rest low
FAMILY = TextFamily("Mra", "mra-tiny.json", length=LENGTH,
                    row_lengths=lambda length: [length, length - 30, length - 61, 9])
HEADS = FAMILY.heads()
tiny_config, make_inputs, output_field = FAMILY.config, FAMILY.inputs, FAMILY.main_field


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.input_names)
    expected = {"MraModel": "BaseModelOutputWithCrossAttentions", "MraForMaskedLM": "MaskedLMOutput",
                "MraForSequenceClassification": "SequenceClassifierOutput",
                "MraForMultipleChoice": "MultipleChoiceModelOutput",
                "MraForTokenClassification": "TokenClassifierOutput",
                "MraForQuestionAnswering": "QuestionAnsweringModelOutput"}[head.__name__]
    assert type(output).__name__ == expected
    assert np.all(np.isfinite(helpers.to_numpy(output[output_field(head)])))
    if head is not tfmodels.MraModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, output_field(head))
    max_length = None if head is tfmodels.MraForMultipleChoice else config.max_position_embeddings
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=max_length)


def test_export_every_head_loads_in_stock_tensorflow(tmp_path):
    """All heads exported (custom ops swapped for their twins) and served in one fresh process. Text signatures
    come with the RoBERTa tokenizer (shared with Longformer); here the numeric ones."""
    jobs = []
    for head in HEADS:
        config = tiny_config()
        jobs.append((head.__name__, head(config), make_inputs(head, config), None, None))
    helpers.export_and_check(jobs, tmp_path)


def run_alone_and_batched(model, lengths, total, seed=0, mode="auto"):
    config = model.config
    ids, mask = helpers.padded_ids(len(lengths), total, config.vocab_size, config.pad_token_id, seed=seed,
                                   lengths=lengths)
    with dispatch.op_mode(mode):
        batched = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, training=False)
        alone = [model(input_ids=ids[i:i + 1, :n], training=False) for i, n in enumerate(lengths)]
    return ids, mask, batched, alone


@pytest.mark.parametrize("approx_mode,priors", [("full", (0, 0)), ("sparse", (0, 0)), ("full", (1, 3))])
def test_padded_batch_rows_equal_each_example_alone(approx_mode, priors):
    """Right-padded examples of very different lengths (more and fewer blocks than the budget, lengths that are
    not multiples of 32): each row equals the example run alone, unpadded."""
    config = tiny_config(approx_mode=approx_mode, initial_prior_first_n_blocks=priors[0],
                         initial_prior_diagonal_n_blocks=priors[1])
    model = tfmodels.MraModel(config)
    lengths = [128, 97, 64, 40, 5]
    _, _, batched, alone = run_alone_and_batched(model, lengths, 128)
    for i, n in enumerate(lengths):
        helpers.assert_close(batched.last_hidden_state[i, :n], alone[i].last_hidden_state[0], 1e-5, f"row {i}")


def test_any_length_including_shorter_than_one_block():
    config = tiny_config()
    model = tfmodels.MraForMaskedLM(config)
    for length in (1, 31, 32, 33, 127, 128):
        ids = np.random.RandomState(length).randint(3, config.vocab_size, (2, length)).astype(np.int32)
        logits = model(input_ids=ids, training=False).logits
        assert logits.shape == (2, length, config.vocab_size) and np.all(np.isfinite(logits.numpy()))


def test_custom_op_and_twin_agree_on_outputs_and_gradients():
    config = tiny_config(hidden_dropout_prob=0.0)
    model = tfmodels.MraForSequenceClassification(config)
    inputs = make_inputs(tfmodels.MraForSequenceClassification, config, labels=True)
    results = {}
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode), tf.GradientTape() as tape:
            output = model(inputs, output_hidden_states=True, training=True)
        grads = tape.gradient(output.loss, model.trainable_variables)
        results[mode] = (output, [tf.convert_to_tensor(g) for g in grads])
    (custom, custom_grads), (twin, twin_grads) = results["custom"], results["reference"]
    helpers.assert_outputs_close(custom, twin, ["loss", "logits", "hidden_states"], atol=1e-5)
    for variable, a, b in zip(model.trainable_variables, custom_grads, twin_grads):
        helpers.assert_close(a, b, 1e-5, f"gradient {variable.path}")


def test_xla_compiles_the_twin_and_matches_the_custom_op():
    config = tiny_config()
    model = tfmodels.MraForTokenClassification(config)
    inputs = make_inputs(tfmodels.MraForTokenClassification, config)
    with dispatch.op_mode("custom"):
        expected = model(inputs, training=False).logits
    assert not model.supports_jit  # Keras' jit_compile="auto" leaves models holding custom ops alone

    @tf.function(jit_compile=True)
    def compiled(ids, mask):
        return model(input_ids=ids, attention_mask=mask, training=False).logits

    helpers.assert_close(compiled(inputs["input_ids"], inputs["attention_mask"]), expected, 1e-5, "XLA logits")


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = make_inputs(tfmodels.MraForMaskedLM, tiny_config(), labels=True)
    grads = []
    for checkpointing in (False, True):
        keras.utils.set_random_seed(0)
        model = tfmodels.MraForMaskedLM(tiny_config(gradient_checkpointing=checkpointing, hidden_dropout_prob=0.0))
        with tf.GradientTape() as tape:
            loss = model(inputs, training=True).loss
        grads.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)])
    for a, b in zip(*grads):
        helpers.assert_close(a, b, 1e-5, "gradient")


def test_effective_attention_weights():
    """With every block selected MRA is dense softmax attention; otherwise its effective weights still give the
    context (context = weights @ value), rows sum to one, padded keys get zero."""
    rng = np.random.RandomState(0)
    q, k, v = (tf.constant(rng.randn(2, 3, 70, 16).astype(np.float32)) for _ in range(3))
    mask = np.ones((2, 70), np.float32)
    mask[1, 50:] = 0
    dense = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(32.0) + (1 - mask)[:, None, None] * -1e9)
    context, probs = mra2_attention(q, k, v, mask, num_blocks=9, output_probs=True)
    helpers.assert_close(probs[0], dense[0], 1e-6, "all blocks selected = dense softmax")
    helpers.assert_close(context[0], tf.matmul(dense, v)[0], 1e-5, "dense context")
    for mode, priors in (("full", (0, 0)), ("sparse", (0, 0)), ("full", (1, 1))):
        context, probs = mra2_attention(q, k, v, mask, num_blocks=4, approx_mode=mode,
                                        initial_prior_first_n_blocks=priors[0],
                                        initial_prior_diagonal_n_blocks=priors[1], output_probs=True)
        expected = tf.matmul(probs, v) * mask[:, None, :, None]
        helpers.assert_close(context, expected, 1e-5, f"{mode} context = weights @ value")
        sums = tf.reduce_sum(probs, -1).numpy()
        np.testing.assert_allclose(sums[0], 1.0, atol=1e-5)
        np.testing.assert_allclose(sums[1][:, :50], 1.0, atol=1e-5)
        assert np.all(probs.numpy()[1][:, :, 50:] == 0) and np.all(probs.numpy()[1][:, 50:] == 0)
        assert float(tf.reduce_max(tf.abs(probs - dense))) > 1e-3  # the approximation really is in play


def test_head_mask_and_position_types():
    config = tiny_config()
    model = tfmodels.MraModel(config)
    inputs = make_inputs(tfmodels.MraModel, config)
    head_mask = np.ones((2, 4), np.float32)
    head_mask[0, 1] = 0.0
    out = model(**inputs, head_mask=head_mask, output_attentions=True, training=False)
    assert np.all(out.attentions[0].numpy()[:, 1] == 0) and np.abs(out.attentions[1].numpy()[:, 1]).sum() > 0
    # The relative types add no position embeddings at all in the reference (the table stays a weight).
    relative = tfmodels.MraModel(tiny_config(position_embedding_type="relative_key"))
    relative.build_model()
    relative.set_weights(model.get_weights())
    got = relative(**inputs, training=False).last_hidden_state
    table = model.mra.embeddings.position_embeddings.embeddings
    original = table.numpy()
    table.assign(np.zeros_like(original))
    try:
        helpers.assert_close(got, model(**inputs, training=False).last_hidden_state, 1e-6, "relative_key")
    finally:
        table.assign(original)


def test_mixed_precision_runs_and_stays_close():
    config = tiny_config()
    model = tfmodels.MraForMaskedLM(config)
    inputs = make_inputs(tfmodels.MraForMaskedLM, config)
    expected = model(inputs, training=False).logits
    with dtype_policy_scope("mixed_bfloat16"):
        half = tfmodels.MraForMaskedLM(config)
        half.build_model()
    half.set_weights(model.get_weights())
    logits = half(inputs, training=False).logits
    assert logits.dtype == tf.bfloat16
    assert float(tf.reduce_max(tf.abs(tf.cast(logits, tf.float32) - expected))) < 0.5


def test_config_validation_round_trip_and_published_sizes(tmp_path):
    with pytest.raises(ValueError, match="approx_mode"):
        tfmodels.MraConfig(approx_mode="dense")
    with pytest.raises(ValueError, match="block_per_row"):
        tfmodels.MraConfig(block_per_row=0)
    with pytest.raises(ValueError, match="initial_prior_first_n_blocks"):
        tfmodels.MraConfig(initial_prior_first_n_blocks=-1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        tfmodels.MraConfig(max_position_embeddings=16)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tfmodels.MraConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="blok_per_row.*did you mean 'block_per_row'"):
        tfmodels.MraConfig(blok_per_row=2)
    with pytest.raises(ValueError, match="is_decoder"):
        tfmodels.MraConfig(is_decoder=True)
    config = tiny_config(num_labels=3, approx_mode="sparse", initial_prior_diagonal_n_blocks=3)
    config.save_pretrained(str(tmp_path))
    again = tfmodels.MraConfig.from_pretrained(str(tmp_path))
    assert again == config and again.num_labels == 3 and again.approx_mode == "sparse"
    published = tfmodels.MraConfig.from_pretrained(os.path.join(CONFIGS, "mra-base-512-4.json"))
    assert published == tfmodels.MraConfig(architectures=["MraForMaskedLM"])
    assert (published.hidden_size, published.num_hidden_layers, published.num_attention_heads,
            published.vocab_size, published.max_position_embeddings, published.block_per_row) == \
        (768, 12, 12, 50265, 512, 4)
    assert published.num_high_resolution_blocks == 64 and tiny_config().num_high_resolution_blocks == 8
    assert tfmodels.TFMraForMaskedLM is tfmodels.MraForMaskedLM
