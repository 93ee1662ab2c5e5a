"""Configs take positional arguments in the order of transformers' config `__init__` (4.57.6), for every
family; a value given twice, or too many positional values, is a TypeError as in Python."""
import inspect
import json

import pytest

from tfmodels.registry import families

transformers = pytest.importorskip("transformers")

CONFIG_CLASSES = sorted((spec.config_class for spec in families().values()), key=lambda c: c.__name__)


def hf_parameters(hf_class):
    parameters = list(inspect.signature(hf_class.__init__).parameters.values())[1:]  # without self
    return [p for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]


def changed(value):
    """A value unlike the default, so that an argument landing on the wrong parameter shows."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    return value


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_positional_order_matches_transformers(config_class):
    hf_class = getattr(transformers, config_class.__name__)
    parameters = hf_parameters(hf_class)
    names = [p.name for p in parameters]
    assert len(names) > 10
    assert list(config_class.defaults)[:len(names)] == names
    if names[0] == "vocab_size":  # the example: XLMRobertaXLConfig(1000).vocab_size == 1000
        assert config_class(1000).vocab_size == hf_class(1000).vocab_size == 1000
    # All parameters by position, booleans flipped and token ids moved, against the reference.
    values = [changed(p.default) if p.name.endswith("_token_id") or isinstance(p.default, bool) else p.default
              for p in parameters]
    ours, reference = config_class(*values), hf_class(*values)
    for name, value in zip(names, values):
        assert getattr(ours, name) == getattr(reference, name), name
        if isinstance(value, (bool, int)):
            assert getattr(ours, name) == value, name
    assert ours.to_dict() == config_class(**dict(zip(names, values))).to_dict()
    assert ours.use_return_dict == reference.use_return_dict


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_positional_errors(config_class):
    first = list(config_class.defaults)[0]
    with pytest.raises(TypeError, match="multiple values"):
        config_class(config_class.defaults[first], **{first: config_class.defaults[first]})
    with pytest.raises(TypeError, match="positional"):
        config_class(*config_class.defaults.values(), 1)
    # Keywords still go through the unknown-key check (did-you-mean); strict stays keyword-only.
    with pytest.raises(ValueError, match="did you mean 'initializer_range'"):
        config_class(initializer_rang=0.1)
    lenient = config_class(foo=3, strict=False)
    assert lenient.foo == 3 and lenient.to_dict()["foo"] == 3


@pytest.mark.parametrize("config_class", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_unknown_keys_of_a_config_json_are_kept_with_a_warning(config_class, tmp_path, caplog):
    """As HF: a config.json key that is no parameter becomes an attribute (and is written back), with a warning;
    a misspelled key passed in code is still an error."""
    from tfmodels.core.logging import logger
    config_class().save_pretrained(str(tmp_path))
    path = tmp_path / "config.json"
    values = json.loads(path.read_text())
    values["my_custom_field"] = [1, 2]
    path.write_text(json.dumps(values))
    logger.propagate = True  # let caplog see the package logger
    try:
        with caplog.at_level("WARNING", logger="tfmodels"):
            config = config_class.from_pretrained(str(tmp_path))
    finally:
        logger.propagate = False
    assert config.my_custom_field == [1, 2] and config.to_dict()["my_custom_field"] == [1, 2]
    assert "my_custom_field" in caplog.text
    with pytest.raises(ValueError, match="did you mean 'initializer_range'"):
        config_class.from_pretrained(str(tmp_path), initializer_rang=0.1)
    # strict=False (as copy() uses) keeps both silently.
    assert config_class.from_pretrained(str(tmp_path), strict=False, initializer_rang=0.1).initializer_rang == 0.1
    assert config.copy().my_custom_field == [1, 2]
