"""Parity with Hugging Face PyTorch (transformers 4.57.6): HF-written checkpoints (every parameter randomised)
loaded into our classes; batch 3 with padding, several global tokens, a length that is not a multiple of the
window, per-layer windows; atol 1e-5 for outputs, hidden states, local and global attentions, losses and
gradients. Both op modes: the compiled custom op and the pure-TF twin."""
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tfmodels.core.checkpoint import named_variables  # noqa: E402
from tfmodels.ops import dispatch  # noqa: E402

BOS, PAD, SEP = 0, 1, 2
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=80, type_vocab_size=2, attention_window=[4, 8])
LENGTH = 13  # pads to 16 inside both models (the largest window is 8)
HEADS = ["LongformerModel", "LongformerForMaskedLM", "LongformerForSequenceClassification",
         "LongformerForMultipleChoice", "LongformerForTokenClassification", "LongformerForQuestionAnswering"]
CONFIG_KWARGS = {"LongformerForSequenceClassification": {"num_labels": 3},
                 "LongformerForTokenClassification": {"num_labels": 5}}
FIELDS = ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "pooler_output", "hidden_states",
          "attentions")


def build_pair(name, tmp_path, seed=0, **config_kwargs):
    hf_config = transformers.LongformerConfig(**{**TINY, **config_kwargs})
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    return hf_model, ours


def qa_ids(batch=3, length=LENGTH, seed=1):
    """`<s> question </s></s> context </s>` then padding: question lengths 2..4, different total lengths."""
    rng = np.random.RandomState(seed)
    ids = np.full((batch, length), PAD, np.int32)
    mask = np.zeros((batch, length), np.int32)
    for row in range(batch):
        question, context = 2 + row % 3, length - 6 - 2 * row
        tokens = [BOS] + list(rng.randint(3, 99, question)) + [SEP, SEP] + list(rng.randint(3, 99, context)) + [SEP]
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = 1
    return ids, mask


def global_mask(batch=3, length=LENGTH):
    """Several global tokens, a different number per sequence (and one in the padding, which stays masked)."""
    mask = np.zeros((batch, length), np.int32)
    mask[:, 0] = 1
    mask[0, [3, 9, 12]] = 1
    mask[1, 5] = 1
    mask[2, 11] = 1  # padding position of row 2: no effect
    return mask


def make_inputs(name, config, default_global=False):
    rng = np.random.RandomState(2)
    ids, mask = qa_ids()
    inputs = {"input_ids": ids, "attention_mask": mask}
    if not default_global:
        inputs["global_attention_mask"] = global_mask()
    if name == "LongformerForMultipleChoice":
        ids2, mask2 = qa_ids(seed=5)
        second = {"input_ids": ids2, "attention_mask": mask2, "global_attention_mask": global_mask()[::-1].copy()}
        inputs = {k: np.stack([v, second[k]], 1) for k, v in inputs.items()}
        inputs["labels"] = np.array([0, 1, 1], np.int32)
    elif name == "LongformerForMaskedLM":
        inputs["labels"] = np.where(mask == 1, rng.randint(0, config.vocab_size, ids.shape), -100).astype(np.int32)
    elif name == "LongformerForTokenClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, ids.shape).astype(np.int32)
    elif name == "LongformerForSequenceClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, 3).astype(np.int32)
    elif name == "LongformerForQuestionAnswering":
        inputs["start_positions"] = np.array([1, 4, 50], np.int32)  # 50: clamped and ignored, as the reference
        inputs["end_positions"] = np.array([3, 8, 2], np.int32)
    return inputs


def compare(got, expected, length=LENGTH):
    fields = [f for f in FIELDS if f in got]
    assert set(fields) - {"pooler_output"} <= set(expected.keys()) | {"loss"}
    helpers.assert_outputs_close(got, expected, fields)
    if "global_attentions" in got:
        reference = expected["global_attentions"]
        assert len(got.global_attentions) == len(reference)
        for i, (ours, theirs) in enumerate(zip(got.global_attentions, reference)):
            theirs = theirs.numpy()
            # the reference returns the padded length: our output is its first `length` positions
            helpers.assert_close(ours, theirs[:, :, :length], name=f"global_attentions[{i}]")


@pytest.mark.parametrize("mode", ["custom", "reference"])
@pytest.mark.parametrize("name", HEADS)
def test_every_head_matches_reference(name, mode, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, **CONFIG_KWARGS.get(name, {}))
    inputs = make_inputs(name, ours.config)
    if name == "LongformerModel":
        inputs.pop("labels", None)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_hidden_states=True, output_attentions=True)
    with dispatch.op_mode(mode):
        got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    compare(got, expected)
    # x + attention_window + 1 with x = 4 (the most global tokens of a sequence)
    assert [a.shape[-1] for a in got.attentions] == [4 + 4 + 1, 4 + 8 + 1]


@pytest.mark.parametrize("name", ["LongformerForSequenceClassification", "LongformerForQuestionAnswering",
                                  "LongformerForMultipleChoice"])
def test_default_global_attention_of_the_heads_matches_reference(name, tmp_path):
    """Without global_attention_mask: <s> for classification, the question tokens for QA, the tokens after the
    question for multiple choice (computed from the separators, as the reference)."""
    hf_model, ours = build_pair(name, tmp_path, **CONFIG_KWARGS.get(name, {}))
    inputs = make_inputs(name, ours.config, default_global=True)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_attentions=True)
    got = ours(**inputs, output_attentions=True, training=False)
    compare(got, expected)
    compiled = tf.function(lambda x: ours(x, training=False, output_attentions=True))(
        {k: tf.constant(v) for k, v in inputs.items()})
    compare(compiled, expected)


def test_single_window_and_int64_inputs(tmp_path):
    hf_model, ours = build_pair("LongformerForMaskedLM", tmp_path, attention_window=6)
    inputs = make_inputs("LongformerForMaskedLM", ours.config)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs), output_attentions=True)
    got = ours(**{k: v.astype(np.int64) for k, v in inputs.items()}, output_attentions=True, training=False)
    compare(got, expected)
    assert got.attentions[0].shape == (3, 4, LENGTH, 4 + 6 + 1)


@pytest.mark.parametrize("problem_type,num_labels", [("regression", 1), ("multi_label_classification", 4)])
def test_sequence_classification_problem_types(problem_type, num_labels, tmp_path):
    hf_model, ours = build_pair("LongformerForSequenceClassification", tmp_path, num_labels=num_labels,
                                problem_type=problem_type)
    inputs = make_inputs("LongformerForSequenceClassification", ours.config)
    rng = np.random.RandomState(3)
    inputs["labels"] = (rng.randn(3).astype(np.float32) if problem_type == "regression"
                        else (rng.rand(3, num_labels) > 0.5).astype(np.float32))
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs))
    helpers.assert_outputs_close(ours(**inputs, training=False), expected, ["loss", "logits"])


def test_inputs_embeds_head_mask_and_token_types(tmp_path):
    hf_model, ours = build_pair("LongformerModel", tmp_path)
    _, mask = qa_ids()
    embeds = np.random.RandomState(8).randn(3, LENGTH, 32).astype(np.float32)
    types = (np.arange(LENGTH)[None] > 6).astype(np.int32).repeat(3, 0)
    head_mask = np.array([[1, 0, 1, 1], [0.5, 1, 1, 0]], np.float32)
    kwargs = dict(inputs_embeds=embeds, attention_mask=mask, global_attention_mask=global_mask(),
                  token_type_ids=types, head_mask=head_mask)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(kwargs), output_attentions=True)
    got = ours(**kwargs, output_attentions=True, training=False)
    compare(got, expected)


@pytest.mark.parametrize("mode", ["custom", "reference"])
def test_loss_gradients_match_reference(mode, tmp_path):
    hf_model, ours = build_pair("LongformerForSequenceClassification", tmp_path, num_labels=3)
    inputs = make_inputs("LongformerForSequenceClassification", ours.config)
    hf_model.zero_grad()
    hf_model(**helpers.torch_inputs(inputs)).loss.backward()
    reference = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
    named = named_variables(ours)
    with dispatch.op_mode(mode):
        with tf.GradientTape() as tape:
            loss = ours(**inputs, training=False).loss
    grads = tape.gradient(loss, [n.variable for n in named])
    assert len(named) == len(reference)
    for n, grad in zip(named, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        if n.permutation is not None:
            grad = np.transpose(grad, np.argsort(n.permutation))
        helpers.assert_close(grad, reference[n.name], 1e-5, f"grad {n.name}")


def test_our_checkpoint_loads_into_reference(tmp_path):
    config = tfmodels.LongformerConfig(**TINY)
    ours = tfmodels.LongformerForMaskedLM(config)
    ours.build_model()
    ours.save_pretrained(str(tmp_path), hf_format=True)
    hf_model = transformers.LongformerForMaskedLM.from_pretrained(str(tmp_path)).eval()
    inputs = make_inputs("LongformerForMaskedLM", config)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs))
    helpers.assert_outputs_close(ours(**inputs, training=False), expected, ["loss", "logits"])
