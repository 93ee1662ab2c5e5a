"""MRA configuration (HF `MraConfig`, model_type "mra"): a RoBERTa-sized encoder with multi-resolution
(MRA-2) attention. Defaults give uw-madison/mra-base-512-4."""
from tfmodels.core.configuration import PretrainedConfig

BLOCK_SIZE = 32  # the attention works on blocks of 32 positions, as the reference's kernels do


class MraConfig(PretrainedConfig):
    """MRA parameters: the usual encoder sizes, plus the attention's budget and priors.

    block_per_row: high-resolution budget: `(max_position_embeddings // 32) * block_per_row` blocks of 32 x 32
        (capped at the number of blocks of the sequence's grid) are computed exactly; the rest of the attention
        comes from the low-resolution (block-averaged) scores.
    approx_mode: "full" (high + low resolution) or "sparse" (the selected high-resolution blocks only).
    initial_prior_first_n_blocks: the first n block rows and columns are favoured in the block selection.
    initial_prior_diagonal_n_blocks: a band of that many diagonal blocks is favoured in the block selection.
    """

    model_type = "mra"
    defaults = {
        "vocab_size": 50265,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 512,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "position_embedding_type": "absolute",
        "block_per_row": 4,
        "approx_mode": "full",
        "initial_prior_first_n_blocks": 0,
        "initial_prior_diagonal_n_blocks": 0,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
    }

    def validate(self):
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size", "block_per_row")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        # The reference stores relative types but never uses them: only "absolute" adds position embeddings.
        self.check_choice("position_embedding_type", ("absolute", "relative_key", "relative_key_query"))
        self.check_choice("approx_mode", ("full", "sparse"))
        self.check_non_negative_int("initial_prior_first_n_blocks", "initial_prior_diagonal_n_blocks",
                                    "chunk_size_feed_forward")
        self.check_problem_type()
        if self.max_position_embeddings < BLOCK_SIZE:
            raise ValueError(f"MraConfig.max_position_embeddings must be at least the block size {BLOCK_SIZE} (the "
                             f"high-resolution budget is (max_position_embeddings // {BLOCK_SIZE}) * block_per_row "
                             f"blocks), got {self.max_position_embeddings}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"MraConfig.pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id}")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("MraConfig: MRA is an encoder (bidirectional block attention); is_decoder and "
                             "add_cross_attention must be False")

    @property
    def num_high_resolution_blocks(self):
        """The reference's high-resolution budget (`MraSelfAttention.num_block`)."""
        rows = self.max_position_embeddings // BLOCK_SIZE
        return min(rows * self.block_per_row, rows * rows)
