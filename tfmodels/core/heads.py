"""Task-head layers shared by the families. Attribute names follow the reference modules so that the
checkpoint walker finds their weights (`dense`, `out_proj`, `layer_norm`, `decoder`, `bias`, `summary`)."""
import tensorflow as tf

from tfmodels.core import layers, serialization
from tfmodels.core.activations import get_activation


class ClassificationHead(serialization.ConfigLayer):
    """Sentence classification on the first token: dropout, dense, activation, dropout, out_proj
    (RoBERTa-style; YOSO, Nystromformer and MRA use the config's hidden_act instead of tanh)."""

    def __init__(self, hidden_size, num_labels, dropout_rate, initializer_range, activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.dropout = layers.dropout(dropout_rate)
        self.dense = layers.dense(hidden_size, initializer_range, name="dense")
        self.activation = get_activation(activation)
        self.out_proj = layers.dense(num_labels, initializer_range, name="out_proj")

    def call(self, features, training=False):
        x = features[:, 0, :]
        x = self.dropout(x, training=training)
        x = self.activation(self.dense(x))
        x = self.dropout(x, training=training)
        return self.out_proj(x)


class LMHead(serialization.ConfigLayer):
    """Masked/causal LM head: dense, activation, layer norm, then the decoder projection to the vocabulary
    plus a bias. With `tied_embeddings` (a function returning the [vocab, hidden] input embedding matrix)
    the decoder reuses the input embeddings, as `tie_word_embeddings` asks."""

    def __init__(self, hidden_size, vocab_size, layer_norm_eps, initializer_range, activation="gelu",
                 tied_embeddings=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dense = layers.dense(hidden_size, initializer_range, name="dense")
        self.activation = get_activation(activation)
        self.layer_norm = layers.layer_norm(layer_norm_eps, name="layer_norm")
        self.tied_embeddings = tied_embeddings
        if tied_embeddings is None:
            self.decoder = layers.dense(vocab_size, initializer_range, use_bias=False, name="decoder")

    def build(self, input_shape):
        self.bias = layers.add_weight(self, "bias", (self.vocab_size,), "zeros")
        self.built = True

    def call(self, hidden_states):
        x = self.layer_norm(self.activation(self.dense(hidden_states)))
        if self.tied_embeddings is not None:
            weights = tf.cast(self.tied_embeddings(), x.dtype)
            logits = tf.matmul(x, weights, transpose_b=True)
        else:
            logits = self.decoder(x)
        return logits + tf.cast(self.bias, logits.dtype)


class SequenceSummary(serialization.ConfigLayer):
    """Summarise a sequence into one vector (HF's SequenceSummary, used by XLNet):
    summary_type "last" | "first" | "mean" | "cls_index", then optional projection, activation, dropouts."""

    def __init__(self, config, initializer_range, **kwargs):
        super().__init__(**kwargs)
        self.summary_type = getattr(config, "summary_type", "last")
        if self.summary_type == "attn":
            raise ValueError("summary_type='attn' is not implemented by the reference either")
        self.summary = None
        if getattr(config, "summary_use_proj", False):
            if getattr(config, "summary_proj_to_labels", False) and config.num_labels > 0:
                size = config.num_labels
            else:
                size = config.hidden_size
            self.summary = layers.dense(size, initializer_range, name="summary")
        activation = getattr(config, "summary_activation", None)
        self.activation = get_activation(activation) if activation else None
        self.first_dropout = layers.dropout(getattr(config, "summary_first_dropout", 0.0))
        self.last_dropout = layers.dropout(getattr(config, "summary_last_dropout", 0.0))

    def call(self, hidden_states, cls_index=None, training=False):
        if self.summary_type == "last":
            output = hidden_states[:, -1]
        elif self.summary_type == "first":
            output = hidden_states[:, 0]
        elif self.summary_type == "mean":
            output = tf.reduce_mean(hidden_states, axis=1)
        elif self.summary_type == "cls_index":
            if cls_index is None:
                cls_index = tf.fill([tf.shape(hidden_states)[0]], tf.shape(hidden_states)[1] - 1)
            cls_index = tf.reshape(tf.cast(cls_index, tf.int32), [-1])
            output = tf.gather(hidden_states, cls_index, axis=1, batch_dims=1)
        else:
            raise ValueError(f"Unknown summary_type {self.summary_type!r}")
        output = self.first_dropout(output, training=training)
        if self.summary is not None:
            output = self.summary(output)
        if self.activation is not None:
            output = self.activation(output)
        return self.last_dropout(output, training=training)
