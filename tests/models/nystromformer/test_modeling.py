"""Nystromformer behaviour: every head through the shared helpers, the attention building blocks against
numpy, any length (static, dynamic, XLA), gradient checkpointing, config validation."""
import os

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.family_spec import TextFamily
from tfmodels.models.nystromformer import modeling
from tfmodels.tokenizers import AlbertTokenizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")

FAMILY = TextFamily("Nystromformer", "nystromformer-tiny.json", length=11)
HEADS = FAMILY.heads()
tiny_config, make_inputs = FAMILY.config, FAMILY.inputs


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.input_names)
    expected = {"NystromformerModel": "BaseModelOutputWithPastAndCrossAttentions",
                "NystromformerForMaskedLM": "MaskedLMOutput",
                "NystromformerForSequenceClassification": "SequenceClassifierOutput",
                "NystromformerForMultipleChoice": "MultipleChoiceModelOutput",
                "NystromformerForTokenClassification": "TokenClassifierOutput",
                "NystromformerForQuestionAnswering": "QuestionAnsweringModelOutput"}[head.__name__]
    assert type(output).__name__ == expected
    if head is not tfmodels.NystromformerModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, FAMILY.main_field(head))
    max_length = None if head is tfmodels.NystromformerForMultipleChoice else config.max_position_embeddings
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=max_length)


def test_export_every_head_loads_in_stock_tensorflow(tmp_path):
    tokenizer = AlbertTokenizer(os.path.join(ASSETS, "albert", "spiece.model"))
    # Short enough that each text paired with the next fits the tiny config's 64 positions (47 tokens).
    texts = ["A first sentence, 1,000 words.", "Une deuxième phrase!", "[MASK] drittes Beispiel, Straße"]
    jobs = []
    text_heads = (tfmodels.NystromformerForMaskedLM, tfmodels.NystromformerForQuestionAnswering)
    for head in HEADS:
        config = tiny_config()
        model = head(config)
        jobs.append((head.__name__, model, make_inputs(head, config, length=13),
                     tokenizer if head in text_heads else None, texts))
    helpers.export_and_check(jobs, tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Attention building blocks against numpy


def numpy_segment_means(x, num_landmarks):
    length = x.shape[1]
    segment = np.arange(length) * num_landmarks // length
    return np.stack([x[:, segment == i].mean(axis=1) for i in range(num_landmarks)], axis=1)


@pytest.mark.parametrize("length", [4, 5, 16, 17, 31, 64])
def test_segment_means_cover_the_sequence_with_contiguous_segments(length):
    x = np.random.RandomState(length).randn(2, length, 6).astype(np.float32)
    expected = numpy_segment_means(x, 4)
    helpers.assert_close(modeling.segment_means(tf.constant(x), 4), expected, 1e-6)
    dynamic = tf.function(lambda t: modeling.segment_means(t, 4),
                          input_signature=[tf.TensorSpec([None, None, 6], tf.float32)])
    helpers.assert_close(dynamic(tf.constant(x)), expected, 1e-6)
    sizes = np.bincount(np.arange(length) * 4 // length, minlength=4)
    assert sizes.min() >= length // 4 and sizes.max() <= -(-length // 4)


@pytest.mark.parametrize("length,kernel_size", [(1, 5), (3, 5), (9, 5), (130, 5), (257, 65), (40, 1)])
def test_sequence_depthwise_conv_equals_direct_convolution(length, kernel_size):
    rng = np.random.RandomState(length)
    heads, head_dim = 3, 4
    values = rng.randn(2, length, heads * head_dim).astype(np.float32)
    kernel = rng.randn(heads, kernel_size).astype(np.float32)
    half = kernel_size // 2
    padded = np.pad(values.reshape(2, length, heads, head_dim), [(0, 0), (half, half), (0, 0), (0, 0)])
    expected = np.zeros((2, length, heads, head_dim), np.float64)
    for k in range(kernel_size):
        expected += kernel[None, None, :, k, None] * padded[:, k:k + length]
    expected = expected.reshape(2, length, heads * head_dim)
    got = modeling.sequence_depthwise_conv(tf.constant(values), tf.constant(kernel), heads)
    helpers.assert_close(got, expected, 2e-5)
    dynamic = tf.function(lambda v: modeling.sequence_depthwise_conv(v, tf.constant(kernel), heads),
                          input_signature=[tf.TensorSpec([None, None, heads * head_dim], tf.float32)])
    helpers.assert_close(dynamic(tf.constant(values)), expected, 2e-5)


def test_iterative_inverse_both_options_approach_the_inverse():
    rng = np.random.RandomState(0)
    logits = rng.randn(2, 3, 6, 6).astype(np.float32) + 4 * np.eye(6, dtype=np.float32)
    matrix = tf.nn.softmax(logits, axis=-1)
    exact = np.linalg.inv(matrix.numpy().astype(np.float64))
    for option in (False, True):
        inverse = modeling.iterative_inverse(matrix, option).numpy()
        assert np.abs(inverse - exact).max() < 1e-3
    # the "original" coefficient is global: it couples the matrices of a batch, as the reference
    peaked = np.zeros((1, 3, 6, 6), np.float32)
    peaked[..., 0] = 6.0  # every row puts most of its mass on the first column: a large column sum
    matrix = tf.concat([matrix[:1], tf.nn.softmax(peaked, axis=-1)], axis=0)
    first = modeling.iterative_inverse(matrix[:1], False, iterations=1).numpy()
    whole = modeling.iterative_inverse(matrix, False, iterations=1).numpy()[:1]
    per_matrix = [modeling.iterative_inverse(matrix[:1], True, iterations=1).numpy(),
                  modeling.iterative_inverse(matrix, True, iterations=1).numpy()[:1]]
    assert np.abs(first - whole).max() > 1e-6
    helpers.assert_close(per_matrix[0], per_matrix[1], 1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Any length, dynamic shapes, XLA


def test_any_length_static_dynamic_and_xla_agree():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.NystromformerForTokenClassification(config)
    dynamic = tf.function(lambda ids, mask: model(input_ids=ids, attention_mask=mask, training=False).logits,
                          input_signature=[tf.TensorSpec([None, None], tf.int32)] * 2)
    xla = tf.function(lambda ids, mask: model(input_ids=ids, attention_mask=mask, training=False).logits,
                      jit_compile=True)
    for length in (3, 4, 5, 16, 29, config.max_position_embeddings):
        ids, mask = helpers.padded_ids(2, length, config.vocab_size, config.pad_token_id, seed=length,
                                       lengths=[length, max(1, length // 2)])
        eager = model(input_ids=ids, attention_mask=mask, output_attentions=True, training=False)
        expected_keys = length if length <= config.num_landmarks else config.num_landmarks
        assert eager.attentions[0].shape == (2, 4, length, expected_keys)
        assert np.isfinite(eager.logits.numpy()).all()
        helpers.assert_close(dynamic(ids, mask), eager.logits, 1e-5, f"dynamic length {length}")
        if length in (3, 29):  # exact and Nystrom paths (each length compiles anew: keep it to two)
            helpers.assert_close(xla(ids, mask), eager.logits, 1e-4, f"XLA length {length}")


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    plain = tfmodels.NystromformerForMaskedLM(config)
    inputs = make_inputs(tfmodels.NystromformerForMaskedLM, config, labels=True)
    plain(inputs)
    recomputed = tfmodels.NystromformerForMaskedLM(config.copy(gradient_checkpointing=True))
    recomputed(inputs)
    recomputed.set_weights(plain.get_weights())
    grads = []
    for model in (plain, recomputed):
        with tf.GradientTape() as tape:
            loss = model(inputs, training=True).loss
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b in zip(*grads):
        helpers.assert_close(tf.convert_to_tensor(a), tf.convert_to_tensor(b), 1e-5)


def test_padding_row_of_word_embeddings_gets_no_gradient():
    # (not the masked LM: its decoder is tied to the table, and the output side does train the padding row)
    config = tiny_config()
    model = tfmodels.NystromformerForSequenceClassification(config)
    inputs = make_inputs(tfmodels.NystromformerForSequenceClassification, config, labels=True)
    model(inputs)
    table = model.nystromformer.embeddings.word_embeddings.embeddings
    with tf.GradientTape() as tape:
        loss = model(inputs, training=False).loss
    grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    assert np.all(grad[config.pad_token_id] == 0) and np.abs(grad).sum() > 0


def test_mixed_precision_runs_and_stays_close():
    config = tiny_config()
    model = tfmodels.NystromformerForSequenceClassification(config)
    inputs = make_inputs(tfmodels.NystromformerForSequenceClassification, config)
    expected = model(inputs).logits
    with tfmodels.core.layers.dtype_policy_scope("mixed_bfloat16"):
        half = tfmodels.NystromformerForSequenceClassification(config)
    half(inputs)
    half.set_weights(model.get_weights())
    got = half(inputs).logits
    assert got.dtype == tf.bfloat16
    helpers.assert_close(tf.cast(got, tf.float32), expected, 0.1)


# ---------------------------------------------------------------------------------------------------------------
# Config


def test_config_validation_and_round_trip(tmp_path):
    with pytest.raises(ValueError, match="num_landmark.*did you mean 'num_landmarks'"):
        tfmodels.NystromformerConfig(num_landmark=8)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tfmodels.NystromformerConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="conv_kernel_size must be odd"):
        tfmodels.NystromformerConfig(conv_kernel_size=64)
    with pytest.raises(ValueError, match="num_landmarks"):
        tfmodels.NystromformerConfig(num_landmarks=0)
    with pytest.raises(ValueError, match="inv_coeff_init_option"):
        tfmodels.NystromformerConfig(inv_coeff_init_option="exact")
    with pytest.raises(ValueError, match="hidden_act"):
        tfmodels.NystromformerConfig(hidden_act="nope")
    with pytest.raises(ValueError, match="encoder only"):
        tfmodels.NystromformerConfig(is_decoder=True)
    assert tfmodels.NystromformerConfig(conv_kernel_size=None).conv_kernel_size is None
    config = tiny_config(num_labels=3, problem_type="single_label_classification", inv_coeff_init_option=True)
    config.save_pretrained(str(tmp_path))
    again = tfmodels.NystromformerConfig.from_pretrained(str(tmp_path))
    assert again == config and again.num_labels == 3 and again.inv_coeff_init_option is True
    published = tfmodels.NystromformerConfig.from_pretrained(os.path.join(CONFIGS, "nystromformer-512.json"))
    assert published == tfmodels.NystromformerConfig(architectures=["NystromformerForMaskedLM"],
                                                     tokenizer_class="AlbertTokenizer")
    assert (published.hidden_size, published.num_hidden_layers, published.vocab_size,
            published.max_position_embeddings, published.num_landmarks, published.conv_kernel_size) == \
        (768, 12, 30000, 510, 64, 65)
    assert tiny_config().exact_attention is False and published.exact_attention is True
    qa = tfmodels.NystromformerForQuestionAnswering(tiny_config(num_labels=5))
    assert qa.config.num_labels == 2
    assert tfmodels.TFNystromformerForMaskedLM is tfmodels.NystromformerForMaskedLM
