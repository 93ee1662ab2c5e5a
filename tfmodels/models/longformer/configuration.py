"""Longformer configuration (HF `LongformerConfig`, model_type "longformer")."""
from tfmodels.core.configuration import PretrainedConfig


class LongformerConfig(PretrainedConfig):
    """Defaults give allenai/longformer-base-4096's architecture with HF's default sizes; the published
    checkpoints' sizes are in configs/longformer-base-4096.json and configs/longformer-large-4096.json.

    `attention_window` is the full window (an even number; each token sees attention_window / 2 tokens on
    either side), one int for every layer or a list with one value per layer.

    tfmodels addition: `xla_max_global_tokens`, used only when the model is compiled with XLA, where shapes
    must be static: the number of global-attention slots per sequence. A sequence with more tokens marked
    for global attention keeps the first `xla_max_global_tokens` of them global (the others attend locally).
    Outside XLA there is no limit.
    """

    model_type = "longformer"
    defaults = {
        "attention_window": 512,
        "sep_token_id": 2,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "onnx_export": False,
        # tfmodels: global-attention slots under XLA (see the class docstring)
        "xla_max_global_tokens": 64,
    }
    # Fields of the original allenai config.json files that configure nothing in the HF implementation.
    passthrough_keys = frozenset({"attention_mode", "ignore_attention_mask", "attention_dilation", "autoregressive"})

    def validate(self):
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                "xla_max_global_tokens")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        windows = self.attention_window
        if isinstance(windows, (list, tuple)):
            if len(windows) != self.num_hidden_layers:
                raise ValueError(f"LongformerConfig.attention_window has {len(windows)} values but the model has "
                                 f"num_hidden_layers={self.num_hidden_layers}; give one window per layer or one int")
            values = list(windows)
        else:
            values = [windows]
        for value in values:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % 2:
                raise ValueError(f"LongformerConfig.attention_window must be a positive even integer (or a list "
                                 f"of them, one per layer), got {windows!r}")
        if self.pad_token_id is None or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"LongformerConfig.pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id}")
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError("LongformerConfig.max_position_embeddings must exceed pad_token_id + 1 (positions "
                             "start after the padding index)")
        if self.sep_token_id is not None and not 0 <= self.sep_token_id < self.vocab_size:
            raise ValueError(f"LongformerConfig.sep_token_id must be an id in [0, vocab_size), got {self.sep_token_id}")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("LongformerConfig: Longformer is an encoder (is_decoder / add_cross_attention must be "
                             "False), as in the reference")

    def attention_windows(self):
        """The attention window of every layer, as a list."""
        windows = self.attention_window
        if isinstance(windows, (list, tuple)):
            return [int(w) for w in windows]
        return [int(windows)] * self.num_hidden_layers
