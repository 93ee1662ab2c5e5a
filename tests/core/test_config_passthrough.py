"""PretrainedConfig.passthrough_keys: a family's legacy config.json fields load, survive a round trip, and do
not weaken the unknown-key check."""
import pytest

from tfmodels.core.configuration import PretrainedConfig


class _Config(PretrainedConfig):
    model_type = "passthrough-test"
    defaults = {"hidden_size": 8}
    passthrough_keys = frozenset({"legacy_mode"})


def test_passthrough_keys_are_kept_and_written_back(tmp_path):
    config = _Config(hidden_size=4, legacy_mode="sliding_chunks")
    assert config.extra == {"legacy_mode": "sliding_chunks"}
    config.save_pretrained(str(tmp_path))
    again = _Config.from_pretrained(str(tmp_path))
    assert again.to_dict()["legacy_mode"] == "sliding_chunks" and again == config
    with pytest.raises(ValueError, match="hiden_size"):
        _Config(hiden_size=4)
    with pytest.raises(ValueError, match="legacy_mode"):
        PretrainedConfig(legacy_mode="x")
