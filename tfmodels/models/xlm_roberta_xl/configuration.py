"""XLM-RoBERTa-XL / XXL configuration (HF `XLMRobertaXLConfig`, model_type "xlm-roberta-xl")."""
from tfmodels.core.configuration import PretrainedConfig


class XLMRobertaXLConfig(PretrainedConfig):
    """Defaults give facebook/xlm-roberta-xl (3.5B parameters); configs/xlm-roberta-xxl.json gives XXL."""

    model_type = "xlm-roberta-xl"
    defaults = {
        "vocab_size": 250880,
        "hidden_size": 2560,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "intermediate_size": 10240,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": 514,
        "type_vocab_size": 1,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-5,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "use_cache": True,
        "classifier_dropout": None,
    }

    def validate(self):
        self.check_positive_int("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size", "max_position_embeddings", "type_vocab_size")
        self.check_divisible("hidden_size", "num_attention_heads")
        self.check_activation("hidden_act")
        self.check_probability("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        self.check_choice("position_embedding_type", ("absolute", "relative_key", "relative_key_query"))
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        if self.pad_token_id is None or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"XLMRobertaXLConfig.pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id}")
        if self.max_position_embeddings <= self.pad_token_id + 1:
            raise ValueError("XLMRobertaXLConfig.max_position_embeddings must exceed pad_token_id + 1 "
                             "(positions start after the padding index)")
        if self.add_cross_attention and not self.is_decoder:
            raise ValueError("XLMRobertaXLConfig: add_cross_attention=True needs is_decoder=True")
