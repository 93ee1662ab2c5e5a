"""XLNet configuration (HF `XLNetConfig`, model_type "xlnet")."""
import warnings

from tfmodels.core.configuration import PretrainedConfig

SUMMARY_TYPES = ("last", "first", "mean", "cls_index")


class XLNetConfig(PretrainedConfig):
    """Defaults give xlnet/xlnet-large-cased (as the reference's); configs/xlnet-base-cased.json and
    configs/xlnet-large-cased.json are the published checkpoints' configs (mem_len null there).

    `d_head` is derived (d_model // n_head): it may be passed, must then agree, and is written to config.json as
    the reference writes it. `use_cache` is the reference's deprecated name of `use_mems_eval`.
    """

    model_type = "xlnet"
    attribute_map = {"n_token": "vocab_size", "hidden_size": "d_model", "num_attention_heads": "n_head",
                     "num_hidden_layers": "n_layer"}
    defaults = {
        "vocab_size": 32000,
        "d_model": 1024,
        "n_layer": 24,
        "n_head": 16,
        "d_inner": 4096,
        "ff_activation": "gelu",
        "untie_r": True,
        "attn_type": "bi",
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "dropout": 0.1,
        "mem_len": 512,
        "reuse_len": None,
        "use_mems_eval": True,
        "use_mems_train": False,
        "bi_data": False,
        "clamp_len": -1,
        "same_length": False,
        "summary_type": "last",
        "summary_use_proj": True,
        "summary_activation": "tanh",
        "summary_last_dropout": 0.1,
        "start_n_top": 5,
        "end_n_top": 5,
        "pad_token_id": 5,
        "bos_token_id": 1,
        "eos_token_id": 2,
        # Read by the sequence summary when present (the reference's XLNetConfig does not set them, so its
        # summary behaves as with these values): dropout before the projection, and projecting to num_labels.
        "summary_first_dropout": 0.0,
        "summary_proj_to_labels": False,
    }

    def __init__(self, *args, strict=True, **kwargs):
        d_head = kwargs.pop("d_head", None)
        if "use_cache" in kwargs:
            warnings.warn("XLNetConfig: `use_cache` is deprecated, use `use_mems_eval`", FutureWarning)
            kwargs["use_mems_eval"] = kwargs.pop("use_cache")
        super().__init__(*args, strict=strict, **kwargs)
        if d_head is not None and d_head != self.d_head:
            raise ValueError(f"XLNetConfig.d_head ({d_head}) must equal d_model // n_head "
                             f"({self.d_model} // {self.n_head} = {self.d_head})")

    @property
    def d_head(self):
        return self.d_model // self.n_head

    @property
    def max_position_embeddings(self):
        """XLNet has no sequence length limit (relative positions); -1 as in the reference."""
        return -1

    def validate(self):
        name = type(self).__name__
        self.check_positive_int("vocab_size", "d_model", "n_layer", "n_head", "d_inner", "start_n_top",
                                "end_n_top")
        self.check_divisible("d_model", "n_head")
        self.check_activation("ff_activation")
        self.check_choice("attn_type", ("bi", "uni"))
        self.check_probability("dropout", "summary_last_dropout", "summary_first_dropout")
        self.check_positive_float("initializer_range", "layer_norm_eps")
        for key in ("mem_len", "reuse_len"):
            value = getattr(self, key)
            if value is not None:
                self.check_non_negative_int(key)
        if isinstance(self.clamp_len, bool) or not isinstance(self.clamp_len, int):
            raise ValueError(f"{name}.clamp_len must be an integer (-1 or 0: no clamping), got {self.clamp_len!r}")
        for key in ("untie_r", "use_mems_eval", "use_mems_train", "bi_data", "same_length", "summary_use_proj",
                    "summary_proj_to_labels"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{name}.{key} must be True or False, got {getattr(self, key)!r}")
        if self.summary_type == "attn":
            raise ValueError(f"{name}.summary_type='attn' is not implemented by the reference either; use one "
                             f"of {list(SUMMARY_TYPES)}")
        self.check_choice("summary_type", SUMMARY_TYPES)
        if self.summary_activation is not None:
            self.check_activation("summary_activation")
        if self.summary_proj_to_labels:
            raise ValueError(f"{name}.summary_proj_to_labels=True is not supported: XLNet's heads put logits_proj "
                             "(d_model inputs) after the summary, so the summary must keep d_model features (the "
                             "reference fails on the shape mismatch)")
        self.check_problem_type()
        self.check_non_negative_int("chunk_size_feed_forward")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"{name}.pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id}")

    def to_dict(self):
        out = super().to_dict()
        out["d_head"] = self.d_head
        return out
