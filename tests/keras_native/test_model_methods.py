"""The model methods HF users call (core.model_methods) against HF PyTorch 4.57.6 on the same checkpoint:
get_input_embeddings / set_input_embeddings / get_output_embeddings and resize_token_embeddings (grow and
shrink, tied and untied LM heads, XLNet's lm_loss), batch 3 with padding, atol 1e-5."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import tfmodels  # noqa: E402
from tests import helpers  # noqa: E402

ROBERTA_XL = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=64, pad_token_id=1, type_vocab_size=1)
XLNET = dict(vocab_size=99, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=None)


def _pair(name, hf_config_class, config, tmp_path):
    hf_model = helpers.hf_checkpoint(getattr(transformers, name), hf_config_class(**config), str(tmp_path))
    return hf_model, getattr(tfmodels, name).from_pretrained(str(tmp_path))


def _inputs(vocab_size, pad_token_id):
    ids, mask = helpers.padded_ids(3, 10, vocab_size, pad_token_id, seed=1)
    return {"input_ids": ids, "attention_mask": mask}


def _hf_logits(hf_model, inputs):
    with torch.no_grad():
        return hf_model(**helpers.torch_inputs(inputs)).logits.numpy()


def _check_resized(hf_model, ours, new_size, inputs, tied):
    torch.manual_seed(0)
    hf_model.resize_token_embeddings(new_size)
    returned = ours.resize_token_embeddings(new_size, seed=0)
    assert returned is ours.get_input_embeddings()
    assert ours.config.vocab_size == hf_model.config.vocab_size == new_size
    hf_table = hf_model.get_input_embeddings().weight.detach().numpy()
    table = np.asarray(ours.get_input_embeddings().embeddings)
    assert table.shape == hf_table.shape == (new_size, hf_table.shape[1])
    kept = min(new_size, 99)
    helpers.assert_close(table[:kept], hf_table[:kept], 1e-7, "kept rows")
    if new_size > 99:  # added rows: the old rows' mean plus noise of 1e-9 x their covariance, as HF
        helpers.assert_close(table[kept:], hf_table[kept:], 1e-4, "added rows")
        helpers.assert_close(table[kept:], np.repeat(table[:kept].mean(0, keepdims=True), new_size - kept, 0), 1e-4)
    hf_logits, logits = _hf_logits(hf_model, inputs), ours(**inputs).logits.numpy()
    assert logits.shape == hf_logits.shape == (3, 10, new_size)
    helpers.assert_close(logits[..., :kept], hf_logits[..., :kept], 1e-5, "logits of the kept vocabulary")
    head = ours.get_output_embeddings()
    hf_bias = hf_model.get_output_embeddings().bias.detach().numpy()
    bias = np.asarray(head.bias)
    assert bias.shape == hf_bias.shape == (new_size,)
    helpers.assert_close(bias, hf_bias, 1e-6 if tied else 1e-4, "bias")  # tied: zeros added; untied: the mean
    if tied:  # the head reads the (resized) word embeddings: a change there changes the logits
        ours.set_input_embeddings(table * 2.0)
        assert not np.allclose(ours(**inputs).logits.numpy(), logits, atol=1e-3)
        ours.set_input_embeddings(table)
        helpers.assert_close(ours(**inputs).logits.numpy(), logits, 1e-6)
    return logits


@pytest.mark.slow
@pytest.mark.parametrize("tied", [True, False])
def test_resize_xlm_roberta_xl_masked_lm_like_hf(tmp_path, tied):
    hf_model, ours = _pair("XLMRobertaXLForMaskedLM", transformers.XLMRobertaXLConfig,
                           {**ROBERTA_XL, "tie_word_embeddings": tied}, tmp_path / "hf")
    inputs = _inputs(99, 1)
    helpers.assert_close(np.asarray(ours.get_input_embeddings().embeddings),
                         hf_model.get_input_embeddings().weight.detach().numpy(), 1e-7)
    grown = _check_resized(hf_model, ours, 107, inputs, tied)
    if tied:  # The resized model saves and loads (ours and HF's format), its vocabulary in config.json.
        _check_reloads(ours, inputs, grown, tmp_path)
    _check_resized(hf_model, ours, 90, inputs, tied)  # shrink


def _check_reloads(ours, inputs, grown, tmp_path):
    ours.save_pretrained(str(tmp_path / "own"))
    reloaded = tfmodels.XLMRobertaXLForMaskedLM.from_pretrained(str(tmp_path / "own"))
    helpers.assert_close(reloaded(**inputs).logits.numpy(), grown, 1e-6)
    ours.save_pretrained(str(tmp_path / "hf_format"), hf_format=True)
    hf_reloaded = transformers.XLMRobertaXLForMaskedLM.from_pretrained(str(tmp_path / "hf_format")).eval()
    helpers.assert_close(_hf_logits(hf_reloaded, inputs), grown, 1e-5)


def test_resize_xlnet_lm_head_like_hf(tmp_path):
    hf_model, ours = _pair("XLNetLMHeadModel", transformers.XLNetConfig, XLNET, tmp_path)
    assert ours.get_output_embeddings() is ours.lm_loss
    _check_resized(hf_model, ours, 104, _inputs(99, 5), tied=True)


def test_resize_options_and_errors():
    config = tfmodels.XLMRobertaXLConfig(**ROBERTA_XL)
    model = tfmodels.XLMRobertaXLForMaskedLM(config)
    model.build_model()
    assert model.resize_token_embeddings() is model.get_input_embeddings()  # nothing to do, as HF
    model.resize_token_embeddings(101, pad_to_multiple_of=8)
    assert config.vocab_size == 104 and model.get_output_embeddings().bias.shape == (104,)
    # mean_resizing=False: the added rows are N(0, initializer_range), HF's _init_weights.
    old = np.asarray(model.get_input_embeddings().embeddings).copy()
    model.resize_token_embeddings(104 + 4000, mean_resizing=False, seed=3)
    table = np.asarray(model.get_input_embeddings().embeddings)
    np.testing.assert_array_equal(table[:104], old)
    added = table[104:]
    assert abs(added.mean()) < 0.01 and abs(added.std() / config.initializer_range - 1) < 0.02
    with pytest.raises(ValueError, match="new_num_tokens must be a positive integer"):
        model.resize_token_embeddings(0)
    classifier = tfmodels.XLMRobertaXLForSequenceClassification(config)
    assert classifier.get_output_embeddings() is None
    beit = tfmodels.BeitModel(tfmodels.BeitConfig.from_pretrained("configs/beit-tiny.json"))
    with pytest.raises(TypeError, match="BeitModel's input embeddings are a BeitPatchEmbeddings, not word"):
        beit.resize_token_embeddings(10)


def test_set_input_embeddings_like_hf(tmp_path):
    hf_model, ours = _pair("XLMRobertaXLModel", transformers.XLMRobertaXLConfig, ROBERTA_XL, tmp_path)
    inputs = _inputs(99, 1)
    table = np.random.RandomState(0).normal(0, 0.2, (99, 32)).astype(np.float32)
    hf_model.set_input_embeddings(torch.nn.Embedding.from_pretrained(torch.tensor(table), padding_idx=1))
    ours.set_input_embeddings(table)
    with torch.no_grad():
        expected = hf_model(**helpers.torch_inputs(inputs)).last_hidden_state.numpy()
    helpers.assert_close(ours(**inputs).last_hidden_state.numpy(), expected, 1e-5)
    layer = tfmodels.core.layers.embedding(99, 32, 0.02, name="word_embeddings")
    layer.build(None)
    layer.embeddings.assign(table)
    ours.set_input_embeddings(layer)
    assert ours.get_input_embeddings() is layer
    helpers.assert_close(ours(**inputs).last_hidden_state.numpy(), expected, 1e-5)
    with pytest.raises(ValueError, match=r"needs a \[vocab, 32\] array"):
        ours.set_input_embeddings(table[:, :8])


NYSTROMFORMER = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=37, max_position_embeddings=64, segment_means_seq_len=16, num_landmarks=4,
                     conv_kernel_size=None, pad_token_id=0)


@pytest.mark.slow
@pytest.mark.parametrize("name, config_class, config, length, reload", [
    ("XLMRobertaXLForSequenceClassification", "XLMRobertaXLConfig", ROBERTA_XL, 10, True),
    ("NystromformerModel", "NystromformerConfig", NYSTROMFORMER, 16, False)])  # (the skeleton's blocks)
def test_prune_heads_like_hf(tmp_path, name, config_class, config, length, reload):
    hf_model, ours = _pair(name, getattr(transformers, config_class), config, tmp_path / "hf")
    ids, mask = helpers.padded_ids(3, length, 99, config["pad_token_id"], seed=1)
    inputs = {"input_ids": ids, "attention_mask": mask}
    field = "logits" if "For" in name else "last_hidden_state"
    # Twice: the second call names heads in the original numbering, after the first pruning.
    for heads in ({0: [1, 3], 1: [0]}, {1: [2], 0: [1]}):
        hf_model.prune_heads(heads)
        ours.prune_heads(heads)
    assert ours.base_model.encoder.layer[0].attention.self.num_heads == 2
    assert {int(k): sorted(v) for k, v in ours.config.pruned_heads.items()} == \
        {int(k): sorted(v) for k, v in hf_model.config.pruned_heads.items()} == {0: [1, 3], 1: [0, 2]}
    with torch.no_grad():
        expected = getattr(hf_model(**helpers.torch_inputs(inputs)), field).numpy()
    pruned = getattr(ours(**inputs), field).numpy()
    helpers.assert_close(pruned, expected, 1e-5, "pruned outputs")
    if reload:  # A pruned model saves and loads, in ours and HF's format (HF prunes from config.json, as we do).
        _check_pruned_reloads(ours, name, inputs, field, expected, tmp_path)


def _check_pruned_reloads(ours, name, inputs, field, expected, tmp_path):
    ours.save_pretrained(str(tmp_path / "own"))
    helpers.assert_close(getattr(getattr(tfmodels, name).from_pretrained(str(tmp_path / "own"))(**inputs), field),
                         expected, 1e-5)
    ours.save_pretrained(str(tmp_path / "hf_format"), hf_format=True)
    hf_reloaded = getattr(transformers, name).from_pretrained(str(tmp_path / "hf_format")).eval()
    with torch.no_grad():
        helpers.assert_close(getattr(hf_reloaded(**helpers.torch_inputs(inputs)), field).numpy(), expected, 1e-5)


BEIT = dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, use_relative_position_bias=False, use_absolute_position_embeddings=True,
            layer_scale_init_value=0.1)


@pytest.mark.slow
def test_prune_heads_of_beit_like_hf(tmp_path):
    """BEiT's attention (key without bias, `attention.attention` / `attention.output.dense`), saved and reloaded in
    both formats; with relative position bias HF's own pruning fails, and ours refuses."""
    hf_model, ours = _pair("BeitModel", transformers.BeitConfig, BEIT, tmp_path / "hf")
    pixels = np.random.RandomState(1).uniform(-1, 1, (3, 3, 32, 32)).astype(np.float32)
    for heads in ({0: [1, 3], 1: [0]}, {1: [2], 0: [1]}):
        hf_model.prune_heads(heads)
        ours.prune_heads(heads)
    assert ours.base_model.encoder.layer[0].attention.attention.num_heads == 2
    with torch.no_grad():
        expected = hf_model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    helpers.assert_close(ours(pixel_values=pixels).last_hidden_state.numpy(), expected, 1e-5, "pruned outputs")
    _check_pruned_reloads(ours, "BeitModel", {"pixel_values": pixels}, "last_hidden_state", expected, tmp_path)
    with_bias = tfmodels.BeitModel(tfmodels.BeitConfig(**{**BEIT, "use_relative_position_bias": True}))
    with pytest.raises(NotImplementedError, match="relative position bias"):
        with_bias.prune_heads({0: [1]})


def test_prune_heads_refused_where_unsupported():
    xlnet = tfmodels.XLNetModel(tfmodels.XLNetConfig(**XLNET))
    with pytest.raises(NotImplementedError, match="XLNetModel: head pruning is not supported for the xlnet family"):
        xlnet.prune_heads({0: [1]})
    config = tfmodels.NystromformerConfig(**{**NYSTROMFORMER, "conv_kernel_size": 3})
    with pytest.raises(NotImplementedError, match="per-head convolution"):
        tfmodels.NystromformerModel(config).prune_heads({0: [1]})
    model = tfmodels.XLMRobertaXLModel(tfmodels.XLMRobertaXLConfig(**ROBERTA_XL))
    with pytest.raises(ValueError, match=r"layer 0 has heads 0..3, got \[4\]"):
        model.prune_heads({0: [4]})
