"""YOSO configuration (HF `YosoConfig`, model_type "yoso"); the defaults give uw-madison/yoso-4096."""
from tfmodels.core.configuration import PretrainedConfig

MAX_HASH_CODE_LEN = 20  # 2^20 buckets per hash already needs 4 MiB per value column and hash


class YosoConfig(PretrainedConfig):
    """YOSO: "You Only Sample (Almost) Once" attention, a Bernoulli-sampling estimate of softmax-like attention
    by locality sensitive hashing.

    use_expectation=True (the default, as the published checkpoint) computes the expectation of the sampled
    attention exactly (YOSO-E, dense); False samples `num_hash` hashes of `hash_code_len` bits each (YOSO),
    with the custom ops of `tfmodels.ops.lsh` (fast Hadamard hashing when use_fast_hash, else Gaussian
    projections) and gradients by LSH (lsh_backward) or by the expectation. conv_window adds a depthwise
    convolution over the (masked) values, of that odd kernel size.
    """

    model_type = "yoso"
    defaults = {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 4096,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "use_expectation": True,
        "hash_code_len": 9,
        "num_hash": 64,
        "conv_window": None,
        "use_fast_hash": True,
        "lsh_backward": True,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }

    def validate(self):
        name = type(self).__name__
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_hash",
                                "hash_code_len")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        self.check_choice("position_embedding_type", ("absolute", "relative_key", "relative_key_query"))
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        for flag in ("use_expectation", "use_fast_hash", "lsh_backward"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{name}.{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.hash_code_len > MAX_HASH_CODE_LEN:
            raise ValueError(f"{name}.hash_code_len must be in [1, {MAX_HASH_CODE_LEN}] (the hash tables have "
                             f"2^hash_code_len buckets), got {self.hash_code_len}")
        window = self.conv_window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0
                                   or window % 2 == 0):
            raise ValueError(f"{name}.conv_window must be None or a positive odd kernel size (an even size would "
                             f"change the sequence length), got {window!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"{name}.pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id}")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError(f"{name}: YOSO is an encoder; is_decoder and add_cross_attention must be False")
