"""XLNet behaviour: every head through the shared helpers, plus memory, two-stream attention, training with
carried memory over uneven batches, generation, gradient checkpointing and the config."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfmodels
from tests import helpers
from tfmodels.tokenizers import XLNetTokenizer

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "configs")
ASSETS = os.path.join(os.path.dirname(tfmodels.__file__), "assets")

HEADS = [tfmodels.XLNetModel, tfmodels.XLNetLMHeadModel, tfmodels.XLNetForSequenceClassification,
         tfmodels.XLNetForMultipleChoice, tfmodels.XLNetForTokenClassification,
         tfmodels.XLNetForQuestionAnsweringSimple, tfmodels.XLNetForQuestionAnswering]
OUTPUTS = {"XLNetModel": "XLNetModelOutput", "XLNetLMHeadModel": "XLNetLMHeadModelOutput",
           "XLNetForSequenceClassification": "XLNetForSequenceClassificationOutput",
           "XLNetForMultipleChoice": "XLNetForMultipleChoiceOutput",
           "XLNetForTokenClassification": "XLNetForTokenClassificationOutput",
           "XLNetForQuestionAnsweringSimple": "XLNetForQuestionAnsweringSimpleOutput",
           "XLNetForQuestionAnswering": "XLNetForQuestionAnsweringOutput"}
FIELD = {tfmodels.XLNetModel: "last_hidden_state", tfmodels.XLNetForQuestionAnsweringSimple: "start_logits",
         tfmodels.XLNetForQuestionAnswering: "start_top_log_probs"}


def tiny_config(**overrides):
    return tfmodels.XLNetConfig.from_pretrained(os.path.join(CONFIGS, "xlnet-tiny.json"), **overrides)


def make_inputs(head, config, batch=4, length=9, labels=False, seed=0, token_types=False):
    ids, mask = helpers.padded_ids(batch, length, config.vocab_size, config.pad_token_id, seed=seed, side="left",
                                   low=9)
    inputs = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        inputs["token_type_ids"] = np.where(mask == 1, np.arange(length) * 3 // length, 3).astype(np.int32)
    rng = np.random.RandomState(seed + 1)
    if head is tfmodels.XLNetForMultipleChoice:
        inputs = {k: np.stack([v, v[::-1]], 1) for k, v in inputs.items()}
        if labels:
            inputs["labels"] = rng.randint(0, 2, batch).astype(np.int32)
        return inputs
    if not labels:
        return inputs
    if head in (tfmodels.XLNetLMHeadModel, tfmodels.XLNetForTokenClassification):
        vocab = config.vocab_size if head is tfmodels.XLNetLMHeadModel else config.num_labels
        inputs["labels"] = np.where(mask == 1, rng.randint(0, vocab, ids.shape), -100).astype(np.int32)
    elif head is tfmodels.XLNetForSequenceClassification:
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif head in (tfmodels.XLNetForQuestionAnsweringSimple, tfmodels.XLNetForQuestionAnswering):
        inputs["start_positions"] = rng.randint(length // 2, length, batch).astype(np.int32)
        inputs["end_positions"] = rng.randint(length // 2, length, batch).astype(np.int32)
        if head is tfmodels.XLNetForQuestionAnswering:
            inputs["is_impossible"] = rng.randint(0, 2, batch).astype(np.float32)
            inputs["cls_index"] = np.full(batch, length - 1, np.int32)
    return inputs


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_call_styles_outputs_and_fit(head):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config)
    output = helpers.run_call_styles_test(model, inputs, model.all_input_names)
    assert type(output).__name__ == OUTPUTS[head.__name__]
    # Memories by default at inference (use_mems_eval), in the reference's [mem_len, batch, d_model] layout.
    batch_rows = 8 if head is tfmodels.XLNetForMultipleChoice else 4
    assert len(output.mems) == config.n_layer and output.mems[0].shape == (9, batch_rows, config.d_model)
    assert "mems" not in model(inputs, use_mems=False, training=False)
    if head is not tfmodels.XLNetModel:
        labelled = make_inputs(head, config, labels=True, token_types=True)
        result = model(labelled, training=False)
        assert "loss" in result and np.isfinite(result.loss.numpy())
        helpers.run_fit_test(model, labelled, model.label_names)


@pytest.mark.parametrize("head", HEADS, ids=lambda h: h.__name__)
def test_save_load_functional_and_bad_inputs(head, tmp_path):
    config = tiny_config()
    model = head(config)
    inputs = make_inputs(head, config, token_types=True)
    helpers.run_save_load_test(model, inputs, tmp_path)
    plain = make_inputs(head, config)
    helpers.run_functional_test(model, plain, FIELD.get(head, "logits"))
    helpers.run_bad_inputs_test(model, plain, config.vocab_size)


def test_xlnet_specific_bad_inputs():
    config = tiny_config()
    model = tfmodels.XLNetModel(config)
    inputs = make_inputs(tfmodels.XLNetModel, config)
    ids = inputs["input_ids"]
    with pytest.raises(ValueError, match="only use one of input_mask"):
        model(**inputs, input_mask=1 - inputs["attention_mask"], training=False)
    with pytest.raises(ValueError, match="mems must be a list of 2"):
        model(input_ids=ids, mems=[np.zeros((3, 4, 32), np.float32)], training=False)
    with pytest.raises(ValueError, match=r"mems\[0\] has batch 2"):
        model(input_ids=ids, mems=[np.zeros((3, 2, 32), np.float32)] * 2, training=False)
    with pytest.raises(ValueError, match="perm_mask must be"):
        model(input_ids=ids, perm_mask=np.zeros((4, 9, 8), np.float32), training=False)
    with pytest.raises(ValueError, match="target_mapping must be"):
        model(input_ids=ids, target_mapping=np.zeros((4, 2, 8), np.float32), training=False)
    with pytest.raises(ValueError, match="even batch"):
        tfmodels.XLNetModel(tiny_config(bi_data=True))(input_ids=ids[:3], training=False)
    with pytest.raises(ValueError, match="exactly one of input_ids and inputs_embeds"):
        model(attention_mask=inputs["attention_mask"], training=False)


def test_export_every_head_loads_in_stock_tensorflow(tmp_path):
    tokenizer = XLNetTokenizer(os.path.join(ASSETS, "xlnet", "spiece.model"))
    texts = ["A first sentence.", "Une deuxième phrase, plus longue que la première!", "<mask> drittes 1999, 2004"]
    with_text = (tfmodels.XLNetForSequenceClassification, tfmodels.XLNetForQuestionAnswering)
    jobs = []
    for head in HEADS:
        config = tiny_config()
        model = head(config)
        jobs.append((head.__name__, model, make_inputs(head, config, token_types=True),
                     tokenizer if head in with_text else None, texts))
    helpers.export_and_check(jobs, tmp_path)


def test_two_stream_outputs_and_masks():
    config = tiny_config()
    model = tfmodels.XLNetLMHeadModel(config)
    ids, _ = helpers.padded_ids(2, 6, config.vocab_size, config.pad_token_id, lengths=[6, 6], low=9)
    perm_mask = np.zeros((2, 6, 6), np.float32)
    perm_mask[:, :, -1] = 1.0  # nobody sees the last token
    target_mapping = np.zeros((2, 1, 6), np.float32)
    target_mapping[:, 0, -1] = 1.0
    out = model(input_ids=ids, perm_mask=perm_mask, target_mapping=target_mapping, output_attentions=True,
                output_hidden_states=True, training=False)
    assert out.logits.shape == (2, 1, config.vocab_size)
    assert len(out.hidden_states) == 2 * (config.n_layer + 1)
    content, query = out.attentions[0]
    assert content.shape == query.shape == (2, 4, 6, 6)
    # The content stream of the last token still sees itself; no other position sees it; the query stream
    # of the target does not see its own content.
    np.testing.assert_allclose(content.numpy()[:, :, :-1, -1], 0.0)
    assert np.all(content.numpy()[:, :, -1, -1] > 0)
    np.testing.assert_allclose(query.numpy()[:, :, :, -1], 0.0)
    # The prediction does not depend on the hidden token.
    other = ids.copy()
    other[:, -1] = (ids[:, -1] + 1) % config.vocab_size
    again = model(input_ids=other, perm_mask=perm_mask, target_mapping=target_mapping, training=False)
    helpers.assert_close(again.logits, out.logits, 1e-6, "logits independent of the hidden token")


def test_memory_continues_a_long_sequence():
    """Two segments with memory give the same last-segment states as one pass over both under the same
    visibility (uni attention, mem_len large enough): the recurrence is exact."""
    config = tiny_config(attn_type="uni", mem_len=None)
    model = tfmodels.XLNetModel(config)
    ids, _ = helpers.padded_ids(3, 10, config.vocab_size, config.pad_token_id, lengths=[10] * 3, low=9)
    full = model(input_ids=ids, training=False)
    first = model(input_ids=ids[:, :6], use_mems=True, training=False)
    second = model(input_ids=ids[:, 6:], mems=first.mems, use_mems=True, training=False)
    helpers.assert_close(second.last_hidden_state, full.last_hidden_state[:, 6:], 1e-5, "second segment")
    assert second.mems[0].shape == (10, 3, config.d_model)
    limited = tfmodels.XLNetModel(tiny_config(mem_len=4, reuse_len=3))
    result = limited(input_ids=ids[:, 6:], use_mems=True, training=False)
    assert result.mems[0].shape == (3, 3, config.d_model)  # reuse_len first positions, at most mem_len
    result = limited(input_ids=ids[:, :6], mems=result.mems, use_mems=True, training=False)
    assert result.mems[0].shape == (4, 3, config.d_model)
    with pytest.warns(FutureWarning, match="use_cache"):  # the reference's deprecated name
        assert "mems" not in limited(input_ids=ids, use_cache=False, training=False)
    assert "mems" not in limited(input_ids=ids, training=True)  # use_mems_train=False


def test_fit_with_carried_memory_on_uneven_batches():
    """use_mems_train=True: each training step continues the previous step's memory (rows of a smaller last
    batch continue the first rows), cleared at each epoch. With lr=0 the logged running losses equal the
    losses computed by hand with the same memories."""
    # A wide initialisation makes attention (and so the memory) matter for the loss.
    config = tiny_config(use_mems_train=True, dropout=0.0, summary_last_dropout=0.0, mem_len=12,
                         initializer_range=0.5)
    model = tfmodels.XLNetForSequenceClassification(config)
    rng = np.random.RandomState(0)
    ids = rng.randint(9, config.vocab_size, (5, 7)).astype(np.int32)
    labels = rng.randint(0, 2, 5).astype(np.int32)
    batches = [(0, 2), (2, 4), (4, 5)]
    mems, expected, seen, total = None, [], 0, 0.0
    for start, stop in batches:
        step_mems = None if mems is None else [m[:, :stop - start] for m in mems]
        result = model(input_ids=ids[start:stop], labels=labels[start:stop], mems=step_mems, training=True)
        mems = result.mems
        seen += stop - start
        total += float(result.loss) * (stop - start)
        expected.append(total / seen)
    logged = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: logged.append(logs["loss"]))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    model.fit({"input_ids": ids, "labels": labels}, batch_size=2, epochs=2, shuffle=False, verbose=0,
              callbacks=[callback])
    np.testing.assert_allclose(logged[:3], expected, atol=1e-5)
    np.testing.assert_allclose(logged[3:], expected, atol=1e-5)  # memory cleared for the second epoch
    # Without carried memory the losses differ (the test can tell).
    plain = [float(model(input_ids=ids[s:e], labels=labels[s:e], training=True).loss) for s, e in batches[1:2]]
    assert abs(plain[0] * 2 - (expected[1] * 4 - expected[0] * 2)) > 1e-2
    # With a learning rate the same loop trains: weights move, losses stay finite.
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.optimizer.learning_rate.assign(0.05)
    history = model.fit({"input_ids": ids, "labels": labels}, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert sum(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables)) > 20


def test_predict_drops_memories_and_generate():
    config = tiny_config()
    model = tfmodels.XLNetLMHeadModel(config)
    inputs = make_inputs(tfmodels.XLNetLMHeadModel, config, batch=5)
    predicted = model.predict(inputs, batch_size=2, verbose=0)
    assert "mems" not in predicted and predicted["logits"].shape == (5, 9, config.vocab_size)
    prompt = inputs["input_ids"][:2, -4:]
    greedy = model.generate(prompt, max_new_tokens=3, eos_token_id=None)
    assert greedy.shape == (2, 7) and greedy.dtype == tf.int32
    np.testing.assert_array_equal(greedy[:, :4].numpy(), prompt)
    # The first new token is the argmax of the documented perm_mask / target_mapping call.
    dummy = np.concatenate([prompt, np.zeros((2, 1), np.int32)], 1)
    perm_mask = np.zeros((2, 5, 5), np.float32)
    perm_mask[:, :, -1] = 1
    target_mapping = np.zeros((2, 1, 5), np.float32)
    target_mapping[:, 0, -1] = 1
    logits = model(input_ids=dummy, perm_mask=perm_mask, target_mapping=target_mapping, training=False).logits
    np.testing.assert_array_equal(greedy[:, 4].numpy(), np.argmax(logits.numpy()[:, 0], -1))
    sampled = [model.generate(prompt, max_new_tokens=3, do_sample=True, top_k=5, seed=3).numpy() for _ in range(2)]
    np.testing.assert_array_equal(sampled[0], sampled[1])
    eos = int(greedy[0, 4])
    stopped = model.generate(prompt, max_new_tokens=3, eos_token_id=eos, pad_token_id=0)
    assert stopped[0, 4] == eos and np.all(stopped[0, 5:].numpy() == 0)


def test_gradient_checkpointing_gives_the_same_gradients():
    inputs = make_inputs(tfmodels.XLNetForSequenceClassification, tiny_config(), labels=True, token_types=True)
    grads, reference_weights = [], None
    for checkpointing in (False, True):
        model = tfmodels.XLNetForSequenceClassification(tiny_config(gradient_checkpointing=checkpointing,
                                                                    dropout=0.0, summary_last_dropout=0.0))
        model.build_model()
        if reference_weights is not None:
            model.set_weights(reference_weights)
        reference_weights = model.get_weights()
        with tf.GradientTape() as tape:
            loss = model(inputs, training=True).loss
        grads.append([tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables)
                      if g is not None])
    assert len(grads[0]) == len(grads[1]) > 30
    for a, b in zip(*grads):
        helpers.assert_close(a, b, 1e-6, "gradient")


def test_mixed_precision_forward():
    model = tfmodels.XLNetForQuestionAnswering(tiny_config())
    model.build_model()
    inputs = make_inputs(tfmodels.XLNetForQuestionAnswering, model.config, token_types=True)
    reference = model(inputs, training=False)
    with tmp_policy("mixed_bfloat16"):
        half = tfmodels.XLNetForQuestionAnswering(tiny_config())
        half.build_model()
    half.set_weights(model.get_weights())
    result = half(inputs, training=False)
    assert result.cls_logits.dtype == tf.bfloat16 and result.mems[0].dtype == tf.bfloat16
    helpers.assert_close(tf.cast(result.start_top_log_probs, tf.float32), reference.start_top_log_probs, 0.05)


class tmp_policy:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.name)

    def __exit__(self, *args):
        keras.config.set_dtype_policy(self.previous)


def test_config_validation_aliases_and_published_configs(tmp_path):
    with pytest.raises(ValueError, match="d_modle.*did you mean 'd_model'"):
        tfmodels.XLNetConfig(d_modle=8)
    with pytest.raises(ValueError, match="multiple of n_head"):
        tfmodels.XLNetConfig(d_model=30, n_head=4)
    with pytest.raises(ValueError, match="attn_type"):
        tfmodels.XLNetConfig(attn_type="causal")
    with pytest.raises(ValueError, match="ff_activation"):
        tfmodels.XLNetConfig(ff_activation="nope")
    with pytest.raises(ValueError, match="d_head"):
        tfmodels.XLNetConfig(d_model=64, n_head=4, d_head=8)
    with pytest.raises(ValueError, match="summary_type='attn'"):
        tfmodels.XLNetConfig(summary_type="attn")
    with pytest.raises(ValueError, match="mem_len"):
        tfmodels.XLNetConfig(mem_len=-2)
    with pytest.raises(ValueError, match="use_mems_train"):
        tfmodels.XLNetConfig(use_mems_train="yes")
    config = tfmodels.XLNetConfig()
    assert (config.d_model, config.n_layer, config.n_head, config.d_inner, config.mem_len) == (1024, 24, 16, 4096, 512)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers, config.n_token) == \
        (1024, 16, 24, 32000)
    assert config.d_head == 64 and config.max_position_embeddings == -1 and config.use_mems_eval
    aliased = tfmodels.XLNetConfig(hidden_size=64, num_attention_heads=2, n_token=10, d_head=32)
    assert (aliased.d_model, aliased.n_head, aliased.vocab_size) == (64, 2, 10)
    with pytest.warns(FutureWarning):
        assert tfmodels.XLNetConfig(use_cache=False).use_mems_eval is False
    tiny = tiny_config(num_labels=3)
    tiny.save_pretrained(str(tmp_path))
    again = tfmodels.XLNetConfig.from_pretrained(str(tmp_path))
    assert again == tiny and again.num_labels == 3 and again.to_dict()["d_head"] == 8
    base = tfmodels.XLNetConfig.from_pretrained(os.path.join(CONFIGS, "xlnet-base-cased.json"))
    assert (base.d_model, base.n_layer, base.n_head, base.d_inner, base.d_head, base.mem_len) == \
        (768, 12, 12, 3072, 64, None)
    large = tfmodels.XLNetConfig.from_pretrained(os.path.join(CONFIGS, "xlnet-large-cased.json"))
    assert (large.d_model, large.n_layer, large.n_head, large.d_inner, large.vocab_size) == (1024, 24, 16, 4096, 32000)
