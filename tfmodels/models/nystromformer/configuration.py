"""Nyströmformer configuration (HF `NystromformerConfig`, model_type "nystromformer")."""
from tfmodels.core.configuration import PretrainedConfig


class NystromformerConfig(PretrainedConfig):
    """Defaults give uw-madison/nystromformer-512 (configs/nystromformer-512.json).

    The attention parameters, as the reference uses them:
    - `num_landmarks`: number of Nyström landmarks (segment means of queries and keys).
    - `segment_means_seq_len`: the sequence length the reference was built for. When it equals
      `num_landmarks`, the reference (and this implementation) computes exact softmax attention at every length.
      Otherwise the reference only runs at exactly this length; ours runs at any length up to
      `max_position_embeddings` and forms landmarks from the actual length (see
      `tfmodels.models.nystromformer.modeling.segment_means`), which equals the reference at this length.
    - `conv_kernel_size`: odd kernel of the depthwise convolution over the values added as a skip connection
      (None disables it).
    - `inv_coeff_init_option`: False scales the initial pseudo-inverse iterate by the largest column sum over the
      whole batch (the reference's "original" option); True by each matrix's own largest column sum (the exact
      1/||K||_1 coefficient, faster convergence).
    """

    model_type = "nystromformer"
    defaults = {
        "vocab_size": 30000,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu_new",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 510,
        "type_vocab_size": 2,
        "segment_means_seq_len": 64,
        "num_landmarks": 64,
        "conv_kernel_size": 65,
        "inv_coeff_init_option": False,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }

    def validate(self):
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size",
                                "segment_means_seq_len", "num_landmarks")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        if self.conv_kernel_size is not None:
            self.check_positive_int("conv_kernel_size")
            if self.conv_kernel_size % 2 == 0:
                raise ValueError(f"NystromformerConfig.conv_kernel_size must be odd (the output keeps the sequence "
                                 f"length with padding kernel//2), got {self.conv_kernel_size}")
        if not isinstance(self.inv_coeff_init_option, bool):
            raise ValueError(f"NystromformerConfig.inv_coeff_init_option must be a bool, got "
                             f"{self.inv_coeff_init_option!r}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"NystromformerConfig.pad_token_id must be an id in [0, vocab_size), got "
                             f"{self.pad_token_id}")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("NystromformerConfig: the Nystromformer is an encoder only (is_decoder and "
                             "add_cross_attention must be False)")

    @property
    def exact_attention(self):
        """True when the reference computes exact softmax attention at every length."""
        return self.num_landmarks == self.segment_means_seq_len
