"""Longformer behaviour: every head through the shared helpers (call styles, fit, save/load, functional API,
bad inputs, export of all heads checked in one fresh process), plus what is special to Longformer: automatic
padding, output shapes, global attention defaults, XLA, mixed precision, gradient checkpointing, memory."""
import os

import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tests.family_spec import TextFamily
from tfmodels.core.layers import dtype_policy_scope
from tfmodels.ops import dispatch
from tfmodels.tokenizers import LongformerTokenizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")

FAMILY = TextFamily("Longformer", "longformer-tiny.json", length=11)
HEADS = FAMILY.heads()
OUTPUTS = {"LongformerModel": "LongformerBaseModelOutputWithPooling",
           "LongformerForMaskedLM": "LongformerMaskedLMOutput",
           "LongformerForSequenceClassification": "LongformerSequenceClassifierOutput",
           "LongformerForMultipleChoice": "LongformerMultipleChoiceModelOutput",
           "LongformerForTokenClassification": "LongformerTokenClassifierOutput",
           "LongformerForQuestionAnswering": "LongformerQuestionAnsweringModelOutput"}


tiny_config, make_inputs = FAMILY.config, FAMILY.inputs


def head_config():
    """One layer for the per-head helpers: the graphs they trace (fit, functional, export) stay small."""
    return tiny_config(num_hidden_layers=1, attention_window=8)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = head_config()
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.input_names)
    assert type(output).__name__ == OUTPUTS[head.__name__]
    full = model(**inputs, output_attentions=True, training=False)
    assert "global_attentions" in full and len(full.global_attentions) == config.num_hidden_layers
    # x + window + 1 columns: x = 1 (<s>, the classifier's default global token) or 0 (no global token)
    assert full.attentions[0].shape[-1] == 8 + 1 + (head is tfmodels.LongformerForSequenceClassification)
    if head is not tfmodels.LongformerModel:
        labelled = make_inputs(head, config, labels=True)
        assert "loss" in model(labelled, training=False)
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = head_config()
    model = head(config)
    inputs = make_inputs(head, config)
    helpers.run_save_load_test(model, inputs, tmp_path)
    helpers.run_functional_test(model, inputs, FAMILY.main_field(head))
    max_length = None if head is tfmodels.LongformerForMultipleChoice else \
        config.max_position_embeddings - config.pad_token_id - 1
    helpers.run_bad_inputs_test(model, inputs, config.vocab_size, max_length=max_length)
    if head is not tfmodels.LongformerForMultipleChoice:
        with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="global_attention_mask"):
            model({**inputs, "global_attention_mask": np.asarray(inputs["attention_mask"])[:, :-1]}, training=False)


def test_export_every_head_loads_in_stock_tensorflow(tmp_path):
    tokenizer = LongformerTokenizer(os.path.join(ASSETS, "roberta", "vocab.json"),
                                    os.path.join(ASSETS, "roberta", "merges.txt"))
    texts = ["A first sentence.", "Une deuxième phrase, plus longue que la première!", "<mask> drittes  Beispiel"]
    text_heads = (tfmodels.LongformerForSequenceClassification, tfmodels.LongformerForMaskedLM,
                  tfmodels.LongformerForTokenClassification)
    jobs = []
    for head in HEADS:
        config = head_config()
        model = head(config)
        jobs.append((head.__name__, model, make_inputs(head, config), tokenizer if head in text_heads else None, texts))
    helpers.export_and_check(jobs, tmp_path)


def test_padding_to_the_window_is_invisible():
    """Outputs at any length equal those of the same tokens followed by explicit (masked) padding, and have
    the input length; attentions have x + window + 1 columns per layer."""
    config = tiny_config()
    model = tfmodels.LongformerModel(config)
    ids, mask = helpers.padded_ids(2, 13, config.vocab_size, config.pad_token_id, lengths=[13, 9])
    glob = np.zeros_like(ids)
    glob[:, [0, 4]] = 1
    glob[1, 6] = 1
    out = model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, output_attentions=True,
                output_hidden_states=True, training=False)
    assert out.last_hidden_state.shape == (2, 13, 32) and out.hidden_states[0].shape == (2, 13, 32)
    assert [a.shape for a in out.attentions] == [(2, 4, 13, 3 + 4 + 1), (2, 4, 13, 3 + 8 + 1)]
    assert [g.shape for g in out.global_attentions] == [(2, 4, 13, 3), (2, 4, 13, 3)]
    extra = 5
    padded_ids = np.concatenate([ids, np.full((2, extra), config.pad_token_id, np.int32)], 1)
    padded = model(input_ids=padded_ids, attention_mask=np.pad(mask, [[0, 0], [0, extra]]),
                   global_attention_mask=np.pad(glob, [[0, 0], [0, extra]]), training=False)
    helpers.assert_close(padded.last_hidden_state[:, :13], out.last_hidden_state, 1e-5)
    # a global token attends to everything, the local ones to the band only
    probs = out.global_attentions[0].numpy()
    np.testing.assert_allclose(probs[0, :, :, 0].sum(-1), 1.0, atol=1e-5)
    local = out.attentions[0].numpy()
    np.testing.assert_allclose(local[1, :, 9:], 0.0)          # padding rows
    np.testing.assert_allclose(local[:, :, [0, 4]], 0.0)        # global rows
    np.testing.assert_allclose(local[0, :, 2].sum(-1), 1.0, atol=1e-5)


def test_no_global_tokens_and_default_global_masks():
    config = tiny_config()
    model = tfmodels.LongformerModel(config)
    inputs = make_inputs(tfmodels.LongformerModel, config)
    out = model(**inputs, output_attentions=True, training=False)
    assert out.global_attentions[0].shape == (4, 4, 11, 0) and out.attentions[0].shape == (4, 4, 11, 5)
    bos, sep, pad = config.bos_token_id, config.sep_token_id, config.pad_token_id
    ids = np.array([[bos, 7, 8, sep, sep, 9, 10, 11, sep, pad], [bos, 7, sep, sep, 9, 10, 11, 12, 13, sep]], np.int32)
    qa = tfmodels.LongformerForQuestionAnswering(config)
    got = qa(input_ids=ids, output_attentions=True, training=False)
    question = (np.arange(10)[None] < np.array([[3], [2]])).astype(np.int32)
    expected = qa(input_ids=ids, global_attention_mask=question, output_attentions=True, training=False)
    helpers.assert_close(got.start_logits, expected.start_logits, 1e-6)
    assert got.global_attentions[0].shape[-1] == 3
    single = np.array([[bos, 7, 8, 9, sep, pad]], np.int32)  # not question + context: no global attention
    assert qa(input_ids=single, output_attentions=True, training=False).global_attentions[0].shape[-1] == 0
    classifier = tfmodels.LongformerForSequenceClassification(config)
    got = classifier(input_ids=ids, output_attentions=True, training=False)
    first = np.zeros_like(ids)
    first[:, 0] = 1
    helpers.assert_close(got.logits, classifier(input_ids=ids, global_attention_mask=first, training=False).logits)
    assert got.global_attentions[0].shape[-1] == 1


def test_xla_compiles_the_twin_path_and_caps_global_tokens():
    config = tiny_config(xla_max_global_tokens=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.LongformerForMaskedLM(config)
    ids, mask = helpers.padded_ids(2, 13, config.vocab_size, config.pad_token_id, lengths=[13, 8])
    glob = np.zeros_like(ids)
    glob[0, [0, 5]] = 1
    glob[1, 0] = 1
    compiled = tf.function(lambda i, m, g: model(input_ids=i, attention_mask=m, global_attention_mask=g,
                                                 training=False).logits, jit_compile=True)
    eager = model(input_ids=ids, attention_mask=mask, global_attention_mask=glob, training=False).logits
    helpers.assert_close(compiled(ids, mask, glob), eager, 1e-4)
    many = glob.copy()
    many[0, [7, 9]] = 1  # 4 global tokens: under XLA the first 2 stay global
    capped = glob.copy()
    helpers.assert_close(compiled(ids, mask, many),
                         model(input_ids=ids, attention_mask=mask, global_attention_mask=capped, training=False).logits,
                         1e-4)

    @tf.function(jit_compile=True)
    def train_step(i, m):
        with tf.GradientTape() as tape:
            loss = model(input_ids=i, attention_mask=m, labels=i, training=True).loss
        return tape.gradient(loss, model.trainable_variables)

    grads = train_step(ids, mask)
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads if g is not None)


def test_mixed_precision_and_op_modes():
    config = tiny_config()
    reference = tfmodels.LongformerForSequenceClassification(config)
    inputs = make_inputs(tfmodels.LongformerForSequenceClassification, config)
    expected = reference(**inputs, training=False).logits.numpy()
    with dtype_policy_scope("mixed_bfloat16"):
        model = tfmodels.LongformerForSequenceClassification(config)
        model.build_model()
    model.set_weights(reference.get_weights())
    for mode in ("custom", "reference"):
        with dispatch.op_mode(mode):
            out = model(**inputs, output_attentions=True, output_hidden_states=True, training=False)
        assert out.hidden_states[-1].dtype == tf.bfloat16 and out.attentions[0].dtype == tf.bfloat16
        np.testing.assert_allclose(tf.cast(out.logits, tf.float32).numpy(), expected, atol=0.1)
    with dispatch.op_mode("reference"):
        twin = reference(**inputs, output_attentions=True, training=False)
    helpers.assert_close(twin.logits, expected, 1e-5)


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tfmodels.LongformerForMaskedLM(config)
    inputs = make_inputs(tfmodels.LongformerForMaskedLM, config, labels=True)
    inputs["global_attention_mask"] = (np.arange(11)[None] % 5 == 0).astype(np.int32).repeat(4, 0)

    def grads():
        with tf.GradientTape() as tape:
            loss = model(**inputs, training=True).loss
        return [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, model.trainable_variables)]

    plain = grads()
    model.config.gradient_checkpointing = True
    for a, b in zip(grads(), plain):
        helpers.assert_close(a, b, 1e-5)


@pytest.mark.parametrize("mode", ["custom", "reference"])
def test_memory_is_linear_in_the_sequence_length(mode):
    """No tensor of the forward and backward graphs holds seq x seq elements (custom op and twin paths)."""
    config = tiny_config(attention_window=16, max_position_embeddings=2100)
    model = tfmodels.LongformerModel(config)
    model.build_model()
    seq = 2048

    @tf.function
    def step(ids, glob):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(input_ids=ids, global_attention_mask=glob, training=True).last_hidden_state)
        return tape.gradient(loss, model.trainable_variables)

    spec = tf.TensorSpec([1, seq], tf.int32)
    with dispatch.op_mode(mode):
        graph = step.get_concrete_function(spec, spec).graph
    largest = max((o.shape.num_elements() for op in graph.get_operations() for o in op.outputs
                   if o.shape.is_fully_defined()), default=0)
    assert largest < seq * seq // 4, f"an intermediate has {largest} elements at seq={seq}"


def test_config_validation_and_published_configs(tmp_path):
    with pytest.raises(ValueError, match="attention_window"):
        tfmodels.LongformerConfig(attention_window=5)
    with pytest.raises(ValueError, match="one window per layer"):
        tfmodels.LongformerConfig(attention_window=[8, 8], num_hidden_layers=3)
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        tfmodels.LongformerConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="attenton_window.*did you mean 'attention_window'"):
        tfmodels.LongformerConfig(attenton_window=8)
    config = tiny_config(num_labels=3)
    config.save_pretrained(str(tmp_path))
    assert tfmodels.LongformerConfig.from_pretrained(str(tmp_path)) == config
    base = tfmodels.LongformerConfig.from_pretrained(os.path.join(CONFIGS, "longformer-base-4096.json"))
    assert (base.hidden_size, base.num_hidden_layers, base.vocab_size, base.max_position_embeddings) == \
        (768, 12, 50265, 4098) and base.attention_windows() == [512] * 12
    large = tfmodels.LongformerConfig.from_pretrained(os.path.join(CONFIGS, "longformer-large-4096.json"))
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads, large.intermediate_size) == \
        (1024, 24, 16, 4096)
    # the original allenai config.json carries fields that configure nothing: accepted and kept
    legacy = tfmodels.LongformerConfig(attention_mode="longformer", ignore_attention_mask=False)
    assert legacy.to_dict()["attention_mode"] == "longformer"
    assert tfmodels.TFLongformerModel is tfmodels.LongformerModel
    with pytest.raises(ValueError, match="num_labels=2"):
        tfmodels.LongformerForQuestionAnswering(tiny_config(num_labels=3))


def test_head_mask_zeroes_heads():
    config = tiny_config()
    model = tfmodels.LongformerModel(config)
    inputs = make_inputs(tfmodels.LongformerModel, config)
    glob = np.zeros_like(inputs["input_ids"])
    glob[:, 0] = 1
    head_mask = np.ones((2, 4), np.float32)
    head_mask[0, 1] = 0.0
    out = model(**inputs, global_attention_mask=glob, head_mask=head_mask, output_attentions=True, training=False)
    np.testing.assert_allclose(out.attentions[0].numpy()[:, 1], 0.0)
    np.testing.assert_allclose(out.global_attentions[0].numpy()[:, 1], 0.0)
    assert np.abs(out.attentions[1].numpy()[:, 1]).sum() > 0
