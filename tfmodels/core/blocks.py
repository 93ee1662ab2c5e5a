"""Transformer sub-blocks that several families share exactly (HF repeats them per model as "Copied from").

Attribute names follow the reference modules (`dense`, `LayerNorm`), so the checkpoint walker maps them to the
same state-dict names (`...intermediate.dense.weight`, `...output.LayerNorm.bias`) in every family.

- `Intermediate`: activation(dense(x)) from hidden_size into intermediate_size (BERT's *Intermediate; also the
  pre-norm families XLM-RoBERTa-XL and BEiT).
- `PostNormOutput`: LayerNorm(dropout(dense(x)) + residual) into hidden_size (BERT's post-norm *SelfOutput, from
  hidden_size, and *Output, from intermediate_size: YOSO, Nystromformer, MRA and Longformer).

The projections run through `layers.apply_dense` (2-D MatMul + BiasAdd + activation or residual Add, which
oneDNN fuses on CPU); since the Dense layers are then never called, the blocks build them explicitly, from the
config's sizes.
"""
import keras

from tfmodels.core import layers
from tfmodels.core.activations import get_activation


class Intermediate(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.input_size = config.hidden_size
        self.dense = layers.dense(config.intermediate_size, config.initializer_range, name="dense")
        self.activation = get_activation(config.hidden_act)

    def build(self, input_shape=None):
        self.dense.build([None, None, self.input_size])
        self.built = True

    def call(self, hidden_states):
        return layers.apply_dense(self.dense, hidden_states, self.activation)


class PostNormOutput(keras.layers.Layer):
    """`input_size`: hidden_size for the attention output (the default), intermediate_size after the FFN."""

    def __init__(self, config, input_size=None, **kwargs):
        super().__init__(**kwargs)
        self.sizes = (input_size or config.hidden_size, config.hidden_size)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None):
        self.dense.build([None, None, self.sizes[0]])
        self.LayerNorm.build([None, None, self.sizes[1]])
        self.built = True

    def call(self, hidden_states, residual, training=False):
        return self.LayerNorm(layers.apply_dense_dropout_residual(self.dense, self.dropout, hidden_states, residual,
                                                                  training))
