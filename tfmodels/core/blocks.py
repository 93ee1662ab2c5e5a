"""Transformer sub-blocks that several families share exactly (HF repeats them per model as "Copied from").

Attribute names follow the reference modules (`dense`, `LayerNorm`), so the checkpoint walker maps them to the
same state-dict names (`...intermediate.dense.weight`, `...output.LayerNorm.bias`) in every family.

- `Intermediate`: activation(dense(x)) into config.intermediate_size (BERT's *Intermediate; also the pre-norm
  families XLM-RoBERTa-XL and BEiT).
- `PostNormOutput`: LayerNorm(dropout(dense(x)) + residual) into config.hidden_size (BERT's post-norm *SelfOutput
  and *Output, used by YOSO, Nystromformer, MRA and Longformer).
"""
import keras

from tfmodels.core import layers
from tfmodels.core.activations import get_activation


class Intermediate(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.intermediate_size, config.initializer_range, name="dense")
        self.activation = get_activation(config.hidden_act)

    def call(self, hidden_states):
        return self.activation(self.dense(hidden_states))


class PostNormOutput(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def call(self, hidden_states, residual, training=False):
        return self.LayerNorm(self.dropout(self.dense(hidden_states), training=training) + residual)
