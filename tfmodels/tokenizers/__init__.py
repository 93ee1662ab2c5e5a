"""Tokenizers: Python API compatible with Hugging Face's slow tokenizers, plus in-graph (TF Text) twins."""
from tfmodels.tokenizers.base import BatchEncoding, PreTrainedTokenizer
from tfmodels.tokenizers.xlm_roberta import XLMRobertaTokenizer
from tfmodels.tokenizers.albert import AlbertTokenizer
from tfmodels.tokenizers.roberta import RobertaTokenizer, LongformerTokenizer
from tfmodels.tokenizers.xlnet import XLNetTokenizer

__all__ = ["BatchEncoding", "PreTrainedTokenizer", "XLMRobertaTokenizer", "AlbertTokenizer", "RobertaTokenizer",
           "LongformerTokenizer", "XLNetTokenizer"]
