"""Tokenizers: Python API compatible with Hugging Face's tokenizers (the slow names, and the fast names with the
fast tokenizers' differences), plus in-graph (TF Text) twins."""
from tfmodels.tokenizers.base import BatchEncoding, PreTrainedTokenizer
from tfmodels.tokenizers.xlm_roberta import XLMRobertaTokenizer, XLMRobertaTokenizerFast
from tfmodels.tokenizers.albert import AlbertTokenizer
from tfmodels.tokenizers.roberta import (RobertaTokenizer, LongformerTokenizer, RobertaTokenizerFast,
                                         LongformerTokenizerFast)
from tfmodels.tokenizers.xlnet import XLNetTokenizer, XLNetTokenizerFast

__all__ = ["BatchEncoding", "PreTrainedTokenizer", "XLMRobertaTokenizer", "AlbertTokenizer", "RobertaTokenizer",
           "LongformerTokenizer", "XLNetTokenizer", "XLNetTokenizerFast", "LongformerTokenizerFast",
           "RobertaTokenizerFast", "XLMRobertaTokenizerFast"]
