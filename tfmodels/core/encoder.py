"""The BERT-style text-encoder skeleton: embeddings, post-LayerNorm layers around a family's self-attention,
the encoder loop, the pooler and the main layer. YOSO, MRA, Nyströmformer (and the test-only BERT family of
docs/adding_a_family.md) are this skeleton plus their attention; Longformer and XLM-RoBERTa-XL use the pieces
that are the same in them (embeddings, position ids, pooler).

A family's self-attention layer is built as `attention_class(config, layer_index, name="self")` and called as
`(hidden_states, attention_mask, head_mask, output_attentions=..., training=...) -> (context, attentions)`,
where `attention_mask` is whatever the family's `MainLayer.layer_mask` made of the 0/1 padding mask and
`attentions` is what the family returns per layer for output_attentions (None when not asked).

Sub-layers carry the reference's module names (`embeddings.word_embeddings`, `encoder.layer.0.attention.self`,
`attention.output.LayerNorm`, `intermediate.dense`, `pooler.dense`) so the checkpoint walker finds HF's names.
"""
import tensorflow as tf

from tfmodels.core import attention as attn, blocks, layers, outputs as out, serialization
from tfmodels.core.gradients import custom_gradient
from tfmodels.core.inputs import check_ids_in_range, check_max_length, text_reference


def create_position_ids_from_input_ids(input_ids, padding_idx, past_key_values_length=0):
    """RoBERTa's (fairseq's) positions: padding_idx + 1, padding_idx + 2, ... over non-padding tokens, counted on
    from `past_key_values_length`; padding_idx on padding."""
    mask = tf.cast(tf.not_equal(input_ids, padding_idx), tf.int32)
    return (tf.cumsum(mask, axis=1) + past_key_values_length) * mask + padding_idx


def padding_rows_without_gradient(ids, value, embedded):
    """torch's nn.Embedding(padding_idx=value): the rows looked up for `value` get no gradient. The forward pass is
    the identity and the rows are masked in the gradient only, so inference makes no pass over the embeddings."""
    if value is None:
        return embedded

    @custom_gradient
    def identity(x):
        return tf.identity(x), lambda dy: tf.where(tf.equal(ids, value)[..., None], tf.zeros_like(dy), dy)

    return identity(embedded)


def classifier_dropout(config):
    """HF's rule for head dropouts: config.classifier_dropout where the family has it and it is set."""
    rate = getattr(config, "classifier_dropout", None)
    return config.hidden_dropout_prob if rate is None else rate


class TextEmbeddings(serialization.ConfigLayer):
    """word + token type + position embeddings, then LayerNorm (unless `layer_norm=False`) and dropout.

    Positions: by default `position_offset`, `position_offset` + 1, ... from a table of max_position_embeddings +
    position_offset rows (YOSO, MRA and Nyströmformer count from 2, BERT from 0). With `padding_aware_positions`
    they are RoBERTa's (`create_position_ids_from_input_ids`) from a table of max_position_embeddings rows.
    The word table's pad_token_id row gets no gradient (HF's padding_idx), as does the position table's
    pad_token_id row with padding-aware positions. Positions are used only when the config's
    position_embedding_type (if it has one) is "absolute"; the table is a weight either way.
    """

    def __init__(self, config, position_offset=0, padding_aware_positions=False, layer_norm=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.position_offset = position_offset
        self.padding_aware_positions = padding_aware_positions
        ir, size = config.initializer_range, config.hidden_size
        self.word_embeddings = layers.embedding(config.vocab_size, size, ir, name="word_embeddings")
        self.position_embeddings = layers.embedding(config.max_position_embeddings + position_offset, size, ir,
                                                    name="position_embeddings")
        self.token_type_embeddings = layers.embedding(config.type_vocab_size, size, ir, name="token_type_embeddings")
        self.LayerNorm = layers.layer_norm(config.layer_norm_eps, name="LayerNorm") if layer_norm else None
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    @property
    def uses_positions(self):
        return getattr(self.config, "position_embedding_type", "absolute") == "absolute"

    @property
    def max_length(self):
        """The longest input the default positions cover."""
        config = self.config
        if self.padding_aware_positions:
            return config.max_position_embeddings - config.pad_token_id - 1
        return config.max_position_embeddings

    def build(self, input_shape=None):
        # Built explicitly: an unused table (inputs_embeds, relative positions) is still a checkpoint weight.
        for table in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            table.build(None)
        if self.LayerNorm is not None:
            self.LayerNorm.build([None, None, self.config.hidden_size])
        self.built = True

    def default_position_ids(self, input_ids, batch, seq_len, past_length):
        config = self.config
        if self.padding_aware_positions and input_ids is not None:
            return create_position_ids_from_input_ids(input_ids, config.pad_token_id, past_length)
        start = (config.pad_token_id + 1 if self.padding_aware_positions else self.position_offset) + past_length
        return tf.broadcast_to(tf.range(start, start + seq_len)[None], [batch, seq_len])

    def call(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None,
             past_key_values_length=0, training=False):
        config = self.config
        if input_ids is not None:
            input_ids = check_ids_in_range("input_ids", input_ids, config.vocab_size)
            inputs_embeds = padding_rows_without_gradient(input_ids, config.pad_token_id,
                                                          self.word_embeddings(input_ids))
        else:
            inputs_embeds = tf.cast(inputs_embeds, self.compute_dtype)
        batch, seq_len = tf.shape(inputs_embeds)[0], tf.shape(inputs_embeds)[1]
        if token_type_ids is None:
            token_type_ids = tf.zeros([batch, seq_len], tf.int32)
        token_type_ids = check_ids_in_range("token_type_ids", token_type_ids, config.type_vocab_size,
                                            "type_vocab_size")
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids)
        if self.uses_positions:
            if position_ids is None:
                static_len = inputs_embeds.shape[1]
                asserts = check_max_length("input_ids", (static_len or seq_len) + past_key_values_length,
                                           self.max_length, self._length_reason())
                with tf.control_dependencies(asserts):  # (graphs: the length check runs before the lookup)
                    position_ids = self.default_position_ids(input_ids, batch, seq_len, past_key_values_length)
            else:
                offset = self.position_offset
                position_ids = check_ids_in_range("position_ids", position_ids, config.max_position_embeddings + offset,
                                                  f"max_position_embeddings + {offset}" if offset else
                                                  "max_position_embeddings")
            positions = self.position_embeddings(position_ids)
            if self.padding_aware_positions:
                positions = padding_rows_without_gradient(position_ids, config.pad_token_id, positions)
            embeddings = embeddings + positions
        if self.LayerNorm is not None:
            embeddings = self.LayerNorm(embeddings)
        return self.dropout(embeddings, training=training)

    def _length_reason(self):
        config = self.config
        if self.padding_aware_positions:
            return (f"max_position_embeddings={config.max_position_embeddings}, positions start at "
                    f"pad_token_id+1={config.pad_token_id + 1}")
        return f"max_position_embeddings={config.max_position_embeddings}"


class SelfAttentionBase(serialization.ConfigLayer):
    """The start of every family's self-attention: the head geometry and the query, key and value projections
    (hidden_size -> hidden_size, named as the reference's)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = layers.dense(config.hidden_size, config.initializer_range, name="query")
        self.key = layers.dense(config.hidden_size, config.initializer_range, name="key")
        self.value = layers.dense(config.hidden_size, config.initializer_range, name="value")

    def split_heads(self, x):
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim]."""
        return attn.split_heads(x, self.num_heads, self.head_dim)

    def project(self, dense, hidden_states):
        """One of the projections (self.query, self.key, self.value) of [batch, seq, hidden], split into heads.
        Through layers.apply_dense: a 2-D MatMul + BiasAdd, which oneDNN fuses (calling the Keras layer on a
        rank-3 input gives a Tensordot and a separate add)."""
        return self.split_heads(layers.apply_dense(dense, hidden_states))


class AttentionBlock(serialization.ConfigLayer):
    """`self` (the family's self-attention) and `output` (dense, dropout, + residual, LayerNorm)."""

    def __init__(self, config, attention_class, layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.self = attention_class(config, layer_index, name="self")
        self.output_ = blocks.PostNormOutput(config, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        context, attentions = self.self(hidden_states, attention_mask, head_mask,
                                        output_attentions=output_attentions, training=training)
        return self.output_(context, hidden_states, training=training), attentions


class PostNormLayer(serialization.ConfigLayer):
    """BERT's layer: attention block, then the feed-forward (intermediate, output + residual, LayerNorm), in
    chunks of config.chunk_size_feed_forward positions. A family subclasses it under its own name
    (`class YosoLayer(PostNormLayer): attention_class = YosoSelfAttention`): Keras names the entries of the
    encoder's layer list in saved weight files after their class."""

    attention_class = None

    def __init__(self, config, layer_index=0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = AttentionBlock(config, self.attention_class, layer_index, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = blocks.PostNormOutput(config, config.intermediate_size, name="output")

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False, training=False):
        attention_output, attentions = self.attention(hidden_states, attention_mask, head_mask,
                                                      output_attentions=output_attentions, training=training)

        def feed_forward(x):
            return self.output_(self.intermediate(x), x, training=training)

        return layers.apply_chunking(feed_forward, self.config.chunk_size_feed_forward, attention_output), attentions


def run_encoder(layer_list, hidden_states, head_mask, step, output_attentions=False, output_hidden_states=False):
    """The encoder loop: `hidden_states, attentions = step(layer, hidden_states, layer_head_mask)` for each layer
    (a step calls the layer through core.layers.run_layer), collecting every layer's input and the final hidden
    states (output_hidden_states) and each layer's attentions (output_attentions) into a BaseModelOutput.
    head_mask: None, [heads] or [layers, heads] (see attention.head_mask_per_layer)."""
    all_hidden, all_attentions = [], []
    head_masks = attn.head_mask_per_layer(head_mask, len(layer_list), hidden_states.dtype)
    for layer, layer_head_mask in zip(layer_list, head_masks):
        if output_hidden_states:
            all_hidden.append(hidden_states)
        hidden_states, attentions = step(layer, hidden_states, layer_head_mask)
        if output_attentions:
            all_attentions.append(attentions)
    if output_hidden_states:
        all_hidden.append(hidden_states)
    return out.BaseModelOutput(last_hidden_state=hidden_states,
                               hidden_states=tuple(all_hidden) if output_hidden_states else None,
                               attentions=tuple(all_attentions) if output_attentions else None)


class TextEncoder(serialization.ConfigLayer):
    """`layer` = [layer_class(config, i)], run by `run_encoder` with gradient checkpointing when configured;
    `share_one_graph`: the layers differ only in their weights (core.layers.share_one_graph)."""

    def __init__(self, config, layer_class, share_one_graph=False, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.layer = [layer_class(config, i, name=f"layer_{i}") for i in range(config.num_hidden_layers)]
        if share_one_graph:
            layers.share_one_graph(self.layer)

    def call(self, hidden_states, attention_mask=None, head_mask=None, output_attentions=False,
             output_hidden_states=False, training=False):
        recompute = self.config.gradient_checkpointing and training

        def step(layer, hidden, layer_head_mask):
            return layers.run_layer(layer, recompute, hidden, attention_mask, layer_head_mask,
                                    output_attentions=output_attentions, training=training)

        return run_encoder(self.layer, hidden_states, head_mask, step, output_attentions, output_hidden_states)


class Pooler(serialization.ConfigLayer):
    """tanh(dense(first token)): BERT's, RoBERTa's, Longformer's and XLM-RoBERTa-XL's pooler."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")

    def call(self, hidden_states):
        return tf.tanh(self.dense(hidden_states[:, 0]))


class TextMainLayer(serialization.ConfigLayer):
    """Embeddings + encoder (+ pooler): the part every head shares. Takes already-normalised inputs.

    A family subclass sets `layer_class` (its PostNormLayer), `output_class` (the reference's base-model output),
    `position_offset`, `has_pooler`, `layers_share_one_graph` (True where nothing but the weights tells its layers
    apart at inference: not where the layer index seeds YOSO's hashing or sets Longformer's window), and overrides
    `layer_mask` to hand its attention the mask form it needs."""

    layer_class = None
    output_class = out.BaseModelOutputWithCrossAttentions
    position_offset = 0
    has_pooler = False
    layers_share_one_graph = False

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = TextEmbeddings(config, self.position_offset, name="embeddings")
        self.encoder = TextEncoder(config, self.layer_class, self.layers_share_one_graph, name="encoder")
        self.pooler = Pooler(config, name="pooler") if self.has_pooler and add_pooling_layer else None

    def layer_mask(self, attention_mask, embeddings):
        """What the layers get for the 0/1 padding mask [batch, seq] (None: no padding) of `embeddings`: by default
        the additive mask [batch, 1, 1, seq] of softmax attention, None without padding (adding zeros changes
        nothing)."""
        return None if attention_mask is None else attn.padding_mask_to_additive(attention_mask, embeddings.dtype)

    def call(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None, head_mask=None,
             inputs_embeds=None, output_attentions=False, output_hidden_states=False, training=False):
        text_reference(input_ids, inputs_embeds, attention_mask=attention_mask, token_type_ids=token_type_ids,
                       position_ids=position_ids)
        embedding_output = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds, training=training)
        encoded = self.encoder(embedding_output, self.layer_mask(attention_mask, embedding_output), head_mask,
                               output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                               training=training)
        fields = dict(encoded)
        if self.pooler is not None:
            fields["pooler_output"] = self.pooler(encoded.last_hidden_state)
        return self.output_class(**fields)
