"""Tokenizers: Python API compatible with Hugging Face's slow tokenizers, plus in-graph (TF Text) twins."""
from tfmodels.tokenizers.base import BatchEncoding, PreTrainedTokenizer
from tfmodels.tokenizers.roberta import LongformerTokenizer, RobertaTokenizer
from tfmodels.tokenizers.xlm_roberta import XLMRobertaTokenizer
