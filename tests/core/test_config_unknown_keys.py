"""Unknown keys of a config.json are kept as attributes with one warning naming them (as HF keeps them); a
misspelled parameter passed in code is still the did-you-mean error."""
import json
import logging
import os

import pytest

import tfmodels
from tfmodels.core.logging import logger

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs")


@pytest.fixture
def warnings_logged():
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _config_dir(tmp_path, **extra):
    with open(os.path.join(CONFIGS, "yoso-tiny.json")) as f:
        values = {**json.load(f), **extra}
    with open(tmp_path / "config.json", "w") as f:
        json.dump(values, f)
    return str(tmp_path)


def test_unknown_keys_of_a_config_file_are_kept_with_one_warning(tmp_path, warnings_logged):
    directory = _config_dir(tmp_path, my_custom_flag=True, adapter_sizes=[4, 8])
    config = tfmodels.YosoConfig.from_pretrained(directory)
    assert config.my_custom_flag is True and config.adapter_sizes == [4, 8]
    messages = [r.getMessage() for r in warnings_logged]
    assert len(messages) == 1 and "my_custom_flag" in messages[0] and "adapter_sizes" in messages[0], messages
    # Kept through a round trip, and by the model that loads the config.
    config.save_pretrained(str(tmp_path / "again"))
    assert tfmodels.YosoConfig.from_pretrained(str(tmp_path / "again")).to_dict() == config.to_dict()
    assert tfmodels.YosoModel(config).config.my_custom_flag is True
    # The same keys from a dict (from_dict) are kept alike.
    with open(os.path.join(directory, "config.json")) as f:
        assert tfmodels.YosoConfig.from_dict(json.load(f)).adapter_sizes == [4, 8]


def test_a_published_hf_config_loads_without_warnings(tmp_path, warnings_logged):
    transformers = pytest.importorskip("transformers")
    transformers.YosoConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37).save_pretrained(str(tmp_path))
    config = tfmodels.YosoConfig.from_pretrained(str(tmp_path))
    assert config.hidden_size == 32 and not warnings_logged, [r.getMessage() for r in warnings_logged]


def test_misspelled_parameters_in_code_are_errors(tmp_path, warnings_logged):
    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        tfmodels.YosoConfig(hiden_size=32)
    with pytest.raises(ValueError, match=r"'num_atention_heads' \(did you mean 'num_attention_heads'\?\)"):
        tfmodels.YosoConfig.from_pretrained(_config_dir(tmp_path), num_atention_heads=2)
    with pytest.raises(ValueError, match=r"'hiden_size' \(did you mean 'hidden_size'\?\)"):
        tfmodels.YosoConfig.from_dict({"hidden_size": 48}, hiden_size=8)
    # strict=False keeps them, silently.
    assert tfmodels.YosoConfig(hiden_size=32, strict=False).hiden_size == 32 and not warnings_logged
