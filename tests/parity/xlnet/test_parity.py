"""Parity with Hugging Face PyTorch (transformers 4.57.6): HF-written checkpoints (every parameter randomised)
loaded into our classes; batch >= 2 with (left) padding; atol 1e-5 for logits, hidden states of both streams,
attentions, memories, beam-search outputs, losses and gradients."""
import numpy as np
import pytest
import tensorflow as tf

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402
from tfmodels.core.checkpoint import named_variables  # noqa: E402

TINY = dict(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=None)
HEADS = [("XLNetModel", {}), ("XLNetLMHeadModel", {}), ("XLNetForSequenceClassification", {"num_labels": 3}),
         ("XLNetForMultipleChoice", {}), ("XLNetForTokenClassification", {"num_labels": 5}),
         ("XLNetForQuestionAnsweringSimple", {}), ("XLNetForQuestionAnswering", {})]
FIELDS = ("loss", "logits", "start_logits", "end_logits", "last_hidden_state", "mems", "hidden_states", "attentions",
          "start_top_log_probs", "end_top_log_probs", "cls_logits")


def build_pair(name, tmp_path, seed=0, **config_kwargs):
    hf_config = transformers.XLNetConfig(**{**TINY, **config_kwargs})
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config, str(tmp_path), seed=seed)
    ours, info = getattr(tfmodels, name).from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info.missing and not info.mismatched and not info.unexpected, info.report()
    return hf_model, ours


def base_inputs(batch=3, length=10, seed=1):
    """Left-padded ids as XLNetTokenizer makes them: ... <sep> <cls>, segments 0 / 1 / 2 and 3 on padding."""
    ids, mask = helpers.padded_ids(batch, length, 99, 5, seed=seed, side="left", low=9)
    types = np.full((batch, length), 3, np.int32)
    for row in range(batch):
        start = int(np.argmax(mask[row]))
        real = length - start
        types[row, start:] = [0] * (real // 2) + [1] * (real - real // 2 - 1) + [2]
        ids[row, -2:] = [4, 3]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def labelled_inputs(name, config, batch=3, length=10):
    inputs = base_inputs(batch, length)
    rng = np.random.RandomState(2)
    if name == "XLNetForMultipleChoice":
        other = base_inputs(batch, length, seed=5)
        inputs = {k: np.stack([inputs[k], other[k]], 1) for k in inputs}
        inputs["labels"] = rng.randint(0, 2, batch).astype(np.int32)
    elif name == "XLNetLMHeadModel":
        inputs["labels"] = np.where(inputs["attention_mask"] == 1, rng.randint(0, 99, (batch, length)), -100)
    elif name == "XLNetForTokenClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, (batch, length)).astype(np.int32)
    elif name == "XLNetForSequenceClassification":
        inputs["labels"] = rng.randint(0, config.num_labels, batch).astype(np.int32)
    elif name == "XLNetForQuestionAnsweringSimple":
        inputs["start_positions"] = np.array([7, 4, 50][:batch], np.int32)  # 50: clamped and ignored
        inputs["end_positions"] = np.array([8, 6, 2][:batch], np.int32)
    elif name == "XLNetForQuestionAnswering":
        inputs["start_positions"] = np.array([7, 4, 6][:batch], np.int32)
        inputs["end_positions"] = np.array([8, 6, 9][:batch], np.int32)
    return {k: np.asarray(v).astype(np.int32) for k, v in inputs.items()}


def reference(hf_model, inputs, **kwargs):
    with torch.no_grad():
        return hf_model(**helpers.torch_inputs(inputs), **kwargs)


def flat_hidden(value):
    """The reference returns two-stream attentions as (h, g) pairs per layer: flatten them like ours."""
    return tuple(tf.nest.flatten(value)) if isinstance(value, (tuple, list)) else value


def compare(got, expected, fields=FIELDS, atol=helpers.ATOL):
    compared = []
    for field in fields:
        if field not in got:
            continue
        assert field in expected, f"{field} missing from the reference output"
        ours, ref = got[field], expected[field]
        if isinstance(ref, (tuple, list)):
            ref = [t for item in ref for t in (item if isinstance(item, (tuple, list)) else (item,))]
            ours = tf.nest.flatten(ours)
            assert len(ours) == len(ref), f"{field}: {len(ours)} tensors vs reference {len(ref)}"
            for i, (a, b) in enumerate(zip(ours, ref)):
                helpers.assert_close(a, b, atol, f"{field}[{i}]")
        else:
            helpers.assert_close(ours, ref, atol, field)
        compared.append(field)
    return compared


@pytest.mark.parametrize("name,config_kwargs", HEADS, ids=[h[0] for h in HEADS])
def test_every_head_matches_reference(name, config_kwargs, tmp_path):
    hf_model, ours = build_pair(name, tmp_path, **config_kwargs)
    inputs = labelled_inputs(name, ours.config)
    unlabelled = {k: v for k, v in inputs.items() if k not in ours.label_names}
    # Without labels: every output (the beam search for XLNetForQuestionAnswering), all hidden states and
    # attentions, and the memories (use_mems_eval defaults to True).
    expected = reference(hf_model, unlabelled, output_hidden_states=True, output_attentions=True)
    got = ours(**unlabelled, output_hidden_states=True, output_attentions=True, training=False)
    compared = compare(got, expected)
    assert "mems" in compared and "attentions" in compared and "hidden_states" in compared
    if name == "XLNetForQuestionAnswering":
        for field in ("start_top_index", "end_top_index"):
            np.testing.assert_array_equal(got[field].numpy(), expected[field].numpy(), err_msg=field)
    if name != "XLNetModel":
        expected = reference(hf_model, inputs)
        got = ours(**inputs, training=False)
        assert "loss" in compare(got, expected, ("loss",) + FIELDS[1:])


def test_question_answering_p_mask_cls_index_and_is_impossible(tmp_path):
    hf_model, ours = build_pair("XLNetForQuestionAnswering", tmp_path, start_n_top=3, end_n_top=4)
    inputs = base_inputs(batch=3, length=12)
    p_mask = np.zeros((3, 12), np.float32)
    p_mask[:, :3] = 1.0   # question tokens
    p_mask[:, -1] = 1.0   # <cls>
    extra = {"p_mask": p_mask, "cls_index": np.array([11, 11, 11], np.int32)}
    expected = reference(hf_model, {**inputs, **extra})
    got = ours(**inputs, **extra, training=False)
    assert got.end_top_index.shape == (3, 12)
    compare(got, expected, ("start_top_log_probs", "end_top_log_probs", "cls_logits"))
    np.testing.assert_array_equal(got.start_top_index.numpy(), expected.start_top_index.numpy())
    np.testing.assert_array_equal(got.end_top_index.numpy(), expected.end_top_index.numpy())
    assert not np.isin(got.start_top_index.numpy(), [0, 1, 2, 11]).any()
    labels = {"start_positions": np.array([4, 5, 7], np.int32), "end_positions": np.array([6, 5, 9], np.int32),
              "is_impossible": np.array([0.0, 1.0, 0.0], np.float32)}
    for with_cls in (True, False):
        batch = {**inputs, **extra, **labels} if with_cls else {**inputs, **labels, "p_mask": p_mask}
        expected = reference(hf_model, batch)
        got = ours(**batch, training=False)
        assert list(got.keys()) == ["loss", "mems"]
        helpers.assert_close(got.loss, expected.loss, name=f"loss (cls loss: {with_cls})")


def test_permutation_lm_two_stream_with_target_mapping(tmp_path):
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path)
    inputs = base_inputs(batch=3, length=10)
    rng = np.random.RandomState(3)
    inputs["perm_mask"] = (rng.rand(3, 10, 10) > 0.6).astype(np.float32)
    target_mapping = np.zeros((3, 3, 10), np.float32)
    for row, positions in enumerate([(9, 4, 6), (8, 7, 5), (3, 9, 8)]):
        target_mapping[row, np.arange(3), positions] = 1.0
    inputs["target_mapping"] = target_mapping
    inputs["labels"] = rng.randint(0, 99, (3, 3)).astype(np.int32)
    expected = reference(hf_model, inputs, output_hidden_states=True, output_attentions=True)
    got = ours(**inputs, output_hidden_states=True, output_attentions=True, training=False)
    assert got.logits.shape == (3, 3, 99)
    assert len(got.hidden_states) == 2 * 3 and got.hidden_states[1].shape == (3, 3, 32)
    assert len(got.attentions) == 2 and got.attentions[0][1].shape == (3, 4, 10, 10)
    compare(got, expected)
    # perm_mask alone (no target_mapping): one stream, content attention limited by the permutation.
    del inputs["target_mapping"], inputs["labels"]
    compare(ours(**inputs, output_attentions=True, training=False),
            reference(hf_model, inputs, output_attentions=True))


@pytest.mark.parametrize("config_kwargs", [{"mem_len": None}, {"mem_len": 6, "reuse_len": 4}],
                         ids=["all", "mem_len6_reuse_len4"])
def test_memory_over_two_segments(config_kwargs, tmp_path):
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path, **config_kwargs)
    first, second = base_inputs(3, 10, seed=1), base_inputs(3, 8, seed=2)
    del first["attention_mask"], second["attention_mask"]  # memories of padded segments mean little
    expected = reference(hf_model, first, use_mems=True)
    got = ours(**first, use_mems=True, training=False)
    compare(got, expected, ("logits", "mems"))
    rng = np.random.RandomState(4)
    second["perm_mask"] = (rng.rand(3, 8, 8) > 0.5).astype(np.float32)
    second["target_mapping"] = np.eye(8, dtype=np.float32)[None, [7, 2]].repeat(3, 0)
    expected = reference(hf_model, {**second, "mems": tuple(expected.mems)}, use_mems=True, output_attentions=True)
    got = ours(**second, mems=got.mems, use_mems=True, output_attentions=True, training=False)
    assert got.attentions[0][0].shape[-1] == expected.attentions[0][0].shape[-1] > 8
    compare(got, expected, ("logits", "mems", "attentions"))


@pytest.mark.parametrize("config_kwargs", [{"bi_data": True}, {"bi_data": True, "clamp_len": 3}],
                         ids=["bi_data", "bi_data_clamp3"])
def test_bi_data_and_clamp_len(config_kwargs, tmp_path):
    hf_model, ours = build_pair("XLNetModel", tmp_path, **config_kwargs)
    first, second = base_inputs(4, 9, seed=1), base_inputs(4, 6, seed=2)
    expected = reference(hf_model, first, use_mems=True)
    got = ours(**first, use_mems=True, training=False)
    compare(got, expected, ("last_hidden_state", "mems"))
    expected = reference(hf_model, {**second, "mems": tuple(expected.mems)}, use_mems=True, output_attentions=True)
    got = ours(**second, mems=got.mems, use_mems=True, output_attentions=True, training=False)
    compare(got, expected, ("last_hidden_state", "mems", "attentions"))


@pytest.mark.parametrize("config_kwargs", [{"attn_type": "uni"}, {"attn_type": "uni", "same_length": True,
                                                                  "mem_len": 6}], ids=["uni", "uni_same_length"])
def test_uni_attention_with_padding_and_memory(config_kwargs, tmp_path):
    """The reference adds its [q, k, 1, 1] causal mask in place to the [q, k, batch, 1] padding mask, which fails
    for batch > 1; so the reference runs one example at a time and our batched result is compared with it."""
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path, **config_kwargs)
    first, second = base_inputs(3, 9, seed=1), base_inputs(3, 7, seed=2)
    got_first = ours(**first, use_mems=True, training=False)
    got = ours(**second, mems=got_first.mems, use_mems=True, output_attentions=True, training=False)
    for row in range(3):
        pick = lambda inputs: {k: v[row:row + 1] for k, v in inputs.items()}  # noqa: E731
        ref_first = reference(hf_model, pick(first), use_mems=True)
        helpers.assert_close(got_first.logits[row:row + 1], ref_first.logits, name=f"row {row} segment 1")
        ref = reference(hf_model, {**pick(second), "mems": tuple(ref_first.mems)}, use_mems=True,
                        output_attentions=True)
        helpers.assert_close(got.logits[row:row + 1], ref.logits, name=f"row {row} segment 2 logits")
        for layer in range(2):
            helpers.assert_close(got.mems[layer][:, row:row + 1], ref.mems[layer], name=f"row {row} mems")
            helpers.assert_close(got.attentions[layer][row:row + 1], ref.attentions[layer], name=f"row {row} attn")
    # Without padding the reference takes the whole batch.
    plain = {k: v for k, v in second.items() if k != "attention_mask"}
    compare(ours(**plain, output_attentions=True, training=False),
            reference(hf_model, plain, output_attentions=True), ("logits", "mems", "attentions"))


def test_input_mask_head_mask_and_inputs_embeds(tmp_path):
    hf_model, ours = build_pair("XLNetModel", tmp_path)
    inputs = base_inputs(3, 8)
    embeds = np.random.RandomState(8).randn(3, 8, 32).astype(np.float32)
    head_mask = np.array([[1, 0, 1, 1], [0.5, 1, 1, 0]], np.float32)
    feed = {"inputs_embeds": embeds, "input_mask": 1.0 - inputs["attention_mask"].astype(np.float32),
            "token_type_ids": inputs["token_type_ids"], "head_mask": head_mask}
    expected = reference(hf_model, feed, output_attentions=True)
    got = ours(**feed, output_attentions=True, training=False)
    compare(got, expected, ("last_hidden_state", "mems", "attentions"))
    np.testing.assert_allclose(got.attentions[0].numpy()[:, 1], 0.0)


@pytest.mark.parametrize("problem_type,num_labels", [("regression", 1), ("multi_label_classification", 4)])
def test_sequence_classification_problem_types(problem_type, num_labels, tmp_path):
    hf_model, ours = build_pair("XLNetForSequenceClassification", tmp_path, num_labels=num_labels,
                                problem_type=problem_type)
    inputs = base_inputs(3, 8)
    rng = np.random.RandomState(3)
    inputs["labels"] = rng.randn(3).astype(np.float32) if num_labels == 1 else \
        (rng.rand(3, num_labels) > 0.5).astype(np.float32)
    compare(ours(**inputs, training=False), reference(hf_model, inputs), ("loss", "logits"))


def test_loss_gradients_match_reference(tmp_path):
    """Gradients of the permutation-LM loss (two streams, perm_mask, target_mapping) for every weight."""
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path, tie_word_embeddings=False)
    inputs = base_inputs(2, 8)
    inputs["perm_mask"] = (np.random.RandomState(5).rand(2, 8, 8) > 0.5).astype(np.float32)
    inputs["target_mapping"] = np.eye(8, dtype=np.float32)[None, [6, 3]].repeat(2, 0)
    inputs["labels"] = np.array([[5, 7], [11, 13]], np.int32)
    hf_model.zero_grad()
    hf_model(**helpers.torch_inputs(inputs)).loss.backward()
    expected = {name: p.grad.numpy() for name, p in hf_model.named_parameters()}
    named = named_variables(ours)
    with tf.GradientTape() as tape:
        loss = ours(**inputs, training=False).loss
    grads = tape.gradient(loss, [n.variable for n in named])
    assert len(named) == len(expected)
    for n, grad in zip(named, grads):
        grad = tf.convert_to_tensor(grad).numpy()
        if n.permutation is not None:
            grad = np.transpose(grad, np.argsort(n.permutation))
        helpers.assert_close(grad, expected[n.name], 1e-5, f"grad {n.name}")


@pytest.mark.parametrize("use_mems", [True, False], ids=["mems", "no_mems"])
def test_generate_matches_reference(use_mems, tmp_path):
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path)
    prompt = np.random.RandomState(0).randint(6, 99, (2, 5)).astype(np.int32)
    expected = hf_model.generate(torch.tensor(prompt, dtype=torch.long), max_new_tokens=6, do_sample=False,
                                 use_mems=use_mems)
    got = ours.generate(prompt, max_new_tokens=6, use_mems=use_mems)
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_our_checkpoint_loads_into_reference(tmp_path):
    config = tfmodels.XLNetConfig(**TINY, num_labels=3)
    ours = tfmodels.XLNetForSequenceClassification(config)
    ours.build_model()
    ours.save_pretrained(str(tmp_path), hf_format=True)
    hf_model = transformers.XLNetForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    inputs = labelled_inputs("XLNetForSequenceClassification", config)
    compare(ours(**inputs, training=False), reference(hf_model, inputs), ("loss", "logits", "mems"))


def test_position_term_in_blocks_of_query_rows_matches_reference(monkeypatch, tmp_path):
    """The position term computed per block of query rows (XLNetRelativeAttention.position_scores; blocks of 4
    here, so that short inputs span several) against the reference: padding and segments, attentions returned
    and not (the fused attention op), memories (more keys than queries) and the two-stream query."""
    from tfmodels.models.xlnet.modeling import XLNetRelativeAttention
    monkeypatch.setattr(XLNetRelativeAttention, "POSITION_BLOCK", 4)
    full_products = []
    full_shift = XLNetRelativeAttention.rel_shift
    monkeypatch.setattr(XLNetRelativeAttention, "rel_shift",
                        lambda self, x, klen: full_products.append(x.shape) or full_shift(self, x, klen))
    hf_model, ours = build_pair("XLNetLMHeadModel", tmp_path)
    first, second = base_inputs(3, 12, seed=1), base_inputs(3, 8, seed=2)
    expected = reference(hf_model, first, use_mems=True, output_attentions=True)
    got = ours(**first, use_mems=True, output_attentions=True, training=False)
    compare(got, expected, ("logits", "mems", "attentions"))
    compare(ours(**first, training=False), reference(hf_model, first), ("logits",))
    rng = np.random.RandomState(4)
    second["perm_mask"] = (rng.rand(3, 8, 8) > 0.5).astype(np.float32)
    second["target_mapping"] = np.eye(8, dtype=np.float32)[None, [7, 2]].repeat(3, 0)
    expected = reference(hf_model, {**second, "mems": tuple(expected.mems)}, output_attentions=True)
    got = ours(**second, mems=got.mems, output_attentions=True, training=False)
    assert got.attentions[0][0].shape[-1] == 20
    compare(got, expected, ("logits", "attentions"))
    assert not full_products, full_products  # every position term took the blocked path


def test_blocked_position_term_same_numbers_in_graph_and_eager(monkeypatch):
    """The blocked position term gives the eager numbers in a tf.function too, to the bit (heads such as the
    beam-search span head rank near-tied scores)."""
    from tfmodels.models.xlnet.modeling import XLNetRelativeAttention
    monkeypatch.setattr(XLNetRelativeAttention, "POSITION_BLOCK", 4)
    model = tfmodels.XLNetModel(tfmodels.XLNetConfig(**TINY))
    inputs = {k: tf.constant(v) for k, v in base_inputs(3, 12).items()}
    eager = model(**inputs, training=False).last_hidden_state
    graph = tf.function(lambda: model(**inputs, training=False).last_hidden_state)()
    np.testing.assert_array_equal(graph.numpy(), eager.numpy())
