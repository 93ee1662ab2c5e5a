"""BERT configuration (HF `BertConfig`, model_type "bert"); the defaults give bert-base-uncased."""
from tfmodels.core.configuration import PretrainedConfig


class BertConfig(PretrainedConfig):
    model_type = "bert"
    defaults = {
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
        "pad_token_id": 0,
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
        # This walk-through family implements absolute positions only (HF also has relative ones).
        self.check_choice("position_embedding_type", ("absolute",))
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("BertConfig: this BERT is an encoder; is_decoder and add_cross_attention must be False")
