"""BEiT configuration (HF `BeitConfig`, model_type "beit").

The defaults give microsoft/beit-base-patch16-224-pt22k. Besides the documented parameters, HF's backbone
mixin keeps `out_features` and `out_indices` aligned with `stage_names` ("stem", "stage1", ...): we do the same
(and write both to config.json, as HF does), so that a config.json round-trips between the two libraries.
"""
from tfmodels.core.configuration import PretrainedConfig


class BeitConfig(PretrainedConfig):
    model_type = "beit"
    defaults = {
        "vocab_size": 8192,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "image_size": 224,
        "patch_size": 16,
        "num_channels": 3,
        "use_mask_token": False,
        "use_absolute_position_embeddings": False,
        "use_relative_position_bias": False,
        "use_shared_relative_position_bias": False,
        "layer_scale_init_value": 0.1,
        "drop_path_rate": 0.1,
        "use_mean_pooling": True,
        "pool_scales": [1, 2, 3, 6],
        "use_auxiliary_head": True,
        "auxiliary_loss_weight": 0.4,
        "auxiliary_channels": 256,
        "auxiliary_num_convs": 1,
        "auxiliary_concat_input": False,
        "semantic_loss_ignore_index": 255,
        "out_features": None,
        "out_indices": None,
        "add_fpn": False,
        "reshape_hidden_states": True,
    }

    def __init__(self, *args, strict=True, **kwargs):
        # `stage_names` is derived from num_hidden_layers (HF writes it to config.json): recomputed, not stored.
        kwargs.pop("stage_names", None)
        if "segmentation_indices" in kwargs:  # HF's deprecated name for out_indices
            kwargs["out_indices"] = kwargs.pop("segmentation_indices")
        super().__init__(*args, strict=strict, **kwargs)

    @classmethod
    def from_dict(cls, config_dict, strict=True, **overrides):
        values = dict(config_dict)
        # Overriding one of the aligned pair (or the depth) re-derives the other, instead of failing on a stale one.
        if "out_indices" in overrides and "out_features" not in overrides:
            values.pop("out_features", None)
        if "out_features" in overrides and "out_indices" not in overrides:
            values.pop("out_indices", None)
        if "num_hidden_layers" in overrides and not {"out_indices", "out_features"} & set(overrides):
            if values.get("out_features") == [f"stage{values.get('num_hidden_layers')}"]:
                values.pop("out_features", None)  # the default (last stage) follows the new depth
                values.pop("out_indices", None)
        return super().from_dict(values, strict=strict, **overrides)

    @property
    def stage_names(self):
        return ["stem"] + [f"stage{i}" for i in range(1, self.num_hidden_layers + 1)]

    @property
    def image_size_2d(self):
        size = self.image_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def patch_size_2d(self):
        size = self.patch_size
        return (size, size) if isinstance(size, int) else tuple(size)

    @property
    def window_size(self):
        """The patch grid (height, width) of config.image_size: the relative position tables are sized for it."""
        (ih, iw), (ph, pw) = self.image_size_2d, self.patch_size_2d
        return ih // ph, iw // pw

    def validate(self):
        name = type(self).__name__
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "num_channels", "auxiliary_channels")
        self.check_non_negative_int("auxiliary_num_convs", "chunk_size_feed_forward")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        self.check_problem_type()
        for key in ("image_size", "patch_size"):
            value = getattr(self, key)
            pair = [value] if isinstance(value, int) else value
            if isinstance(value, bool) or not isinstance(pair, (list, tuple)) or len(pair) not in (1, 2) or any(
                    isinstance(v, bool) or not isinstance(v, int) or v <= 0 for v in pair):
                raise ValueError(f"{name}.{key} must be a positive integer or a [height, width] pair, got {value!r}")
        if any(i < p for i, p in zip(self.image_size_2d, self.patch_size_2d)):
            raise ValueError(f"{name}: image_size {self.image_size} is smaller than patch_size {self.patch_size}")
        if isinstance(self.layer_scale_init_value, bool) or not isinstance(self.layer_scale_init_value, (int, float)) \
                or self.layer_scale_init_value < 0:
            raise ValueError(f"{name}.layer_scale_init_value must be a number >= 0 (0 disables layer scale), got "
                             f"{self.layer_scale_init_value!r}")
        if isinstance(self.auxiliary_loss_weight, bool) or not isinstance(self.auxiliary_loss_weight, (int, float)):
            raise ValueError(f"{name}.auxiliary_loss_weight must be a number, got {self.auxiliary_loss_weight!r}")
        if not isinstance(self.pool_scales, (list, tuple)) or not self.pool_scales or any(
                isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in self.pool_scales):
            raise ValueError(f"{name}.pool_scales must be a non-empty list of positive integers, got "
                             f"{self.pool_scales!r}")
        if isinstance(self.semantic_loss_ignore_index, bool) or not isinstance(self.semantic_loss_ignore_index, int):
            raise ValueError(f"{name}.semantic_loss_ignore_index must be an integer, got "
                             f"{self.semantic_loss_ignore_index!r}")
        self._align_out_features_and_indices()

    def _align_out_features_and_indices(self):
        """HF's backbone rule: out_features / out_indices name stages of stage_names, without duplicates, in
        order; either one defines the other; neither means the last stage."""
        name, stages = type(self).__name__, self.stage_names
        features, indices = self.out_features, self.out_indices
        if features is not None:
            if not isinstance(features, list) or any(f not in stages for f in features):
                raise ValueError(f"{name}.out_features must be a list of stage names from {stages}, got {features!r}")
            if len(set(features)) != len(features) or features != [s for s in stages if s in features]:
                raise ValueError(f"{name}.out_features must be in the order of stage_names without duplicates, "
                                 f"got {features!r}")
        if indices is not None:
            if isinstance(indices, tuple):
                indices = list(indices)
            if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
                raise ValueError(f"{name}.out_indices must be a list of integers, got {indices!r}")
            positive = [i % len(stages) if i < 0 else i for i in indices]
            if any(not 0 <= i < len(stages) for i in positive):
                raise ValueError(f"{name}.out_indices must index stage_names {stages} (num_hidden_layers="
                                 f"{self.num_hidden_layers}), got {indices!r}")
            if len(set(positive)) != len(positive) or positive != sorted(positive):
                raise ValueError(f"{name}.out_indices must be increasing without duplicates, got {indices!r}")
        if features is None and indices is None:
            features, indices = [stages[-1]], [len(stages) - 1]
        elif features is None:
            features = [stages[i] for i in indices]
        elif indices is None:
            indices = [stages.index(f) for f in features]
        elif features != [stages[i] for i in indices]:
            raise ValueError(f"{name}: out_features {features} and out_indices {indices} name different stages")
        object.__setattr__(self, "out_features", list(features))
        object.__setattr__(self, "out_indices", list(indices))
