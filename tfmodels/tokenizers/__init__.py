"""Tokenizers: Python API compatible with Hugging Face's slow tokenizers, plus in-graph (TF Text) twins."""
from tfmodels.tokenizers.base import BatchEncoding, PreTrainedTokenizer
from tfmodels.tokenizers.xlm_roberta import XLMRobertaTokenizer
from tfmodels.tokenizers.xlnet import XLNetTokenizer
