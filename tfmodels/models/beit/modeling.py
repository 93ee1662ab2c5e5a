"""BEiT: a ViT with relative position bias, layer scale and stochastic depth, with every documented task head
(masked image modeling, image classification, UperNet semantic segmentation).

Images: `pixel_values` in NCHW [batch, num_channels, height, width], as the reference documents give them, or
NHWC [batch, height, width, num_channels]. The rule: channels-first when axis 1 has num_channels entries (this
wins when both axes could be channels), otherwise channels-last when the last axis has num_channels entries,
otherwise a ValueError. Internally everything runs channels-last (TF's CPU convolutions need it); the
segmentation logits are returned channels-first, as the reference returns them. Images of any size (at least
one patch) work: absolute position embeddings are interpolated bicubically and relative position bias tables
bilinearly to the input's patch grid, as the reference does for every input size.

Parity notes: the relative-position tables are resized with torch's bilinear sampling (tf.image.resize with
half-pixel centers samples identically) and the position embeddings with torch's bicubic (a=-0.75, clamped
taps; core.image_ops), not TF's Keys cubic. The reference's `interpolate_pos_encoding=True` additionally
resizes each [seq, seq] bias to (seq, seq), which is the identity: we accept the option and skip that no-op.
"""
import functools

import keras
import numpy as np
import tensorflow as tf

from tfmodels.core import attention as attn, blocks
from tfmodels.core import image_ops, initializers, layers, losses, outputs as out, tasks
from tfmodels.core.activations import get_activation
from tfmodels.core.encoder import run_encoder
from tfmodels.core.inputs import check_rank
from tfmodels.core.layers import apply_chunking
from tfmodels.core.modeling import DEFAULT_OPTIONS, PreTrainedModel
from tfmodels.models.beit.checkpoint import BEIT_CHECKPOINT_MAP
from tfmodels.models.beit.configuration import BeitConfig

BeitModelOutputWithPooling = out.define_output(
    "BeitModelOutputWithPooling", ("last_hidden_state", "pooler_output", "hidden_states", "attentions"),
    "Output of BeitModel: pooler_output is the layer-normed mean of the patch tokens (use_mean_pooling) or the "
    "final [CLS] hidden state.")


def _dim(tensor, axis):
    static = tensor.shape[axis]
    return static if static is not None else tf.shape(tensor)[axis]


def _is_int(*values):
    return all(isinstance(v, (int, np.integer)) for v in values)


def pixels_to_channels_last(pixel_values, num_channels):
    """NCHW or NHWC pixel values -> NHWC (see the module docstring for the rule)."""
    check_rank("pixel_values", pixel_values, 4)
    shape = pixel_values.shape
    if shape[1] == num_channels:
        return tf.transpose(pixel_values, [0, 2, 3, 1])
    if shape[-1] == num_channels:
        return pixel_values
    if shape[1] is None and shape[-1] is None:
        raise ValueError(f"pixel_values has shape {shape}: the channel axis (1 for NCHW or 3 for NHWC) must be "
                         f"statically known to be num_channels={num_channels}")
    raise ValueError(f"pixel_values has shape {shape}; expected {num_channels} channels (num_channels) on axis 1 "
                     f"(NCHW, as documented) or on the last axis (NHWC)")


def patch_grid(config, height, width):
    (patch_h, patch_w) = config.patch_size_2d
    return height // patch_h, width // patch_w


# ---------------------------------------------------------------------------------------------------------------
# Relative position index (the reference's generate_relative_position_index, for any window)


@functools.lru_cache(maxsize=32)
def _relative_position_index_numpy(height, width):
    num_relative_distance = (2 * height - 1) * (2 * width - 1) + 3
    coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij")).reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0)
    inner = (relative[..., 0] + height - 1) * (2 * width - 1) + (relative[..., 1] + width - 1)
    area = height * width
    index = np.zeros((area + 1, area + 1), np.int32)
    index[1:, 1:] = inner
    index[0, :] = num_relative_distance - 3
    index[:, 0] = num_relative_distance - 2
    index[0, 0] = num_relative_distance - 1
    return index


def relative_position_index(height, width):
    """[(h*w+1) ** 2] int32 indices into a relative position table of (2h-1)(2w-1)+3 rows: the patch pairs by
    their offset, then the three [CLS] entries (cls->token, token->cls, cls->cls)."""
    if _is_int(height, width):
        return tf.constant(_relative_position_index_numpy(int(height), int(width)).reshape(-1))
    rows = tf.repeat(tf.range(height), width)
    cols = tf.tile(tf.range(width), [height])
    inner = (rows[:, None] - rows[None, :] + height - 1) * (2 * width - 1) + (cols[:, None] - cols[None, :] + width - 1)
    num_relative_distance = (2 * height - 1) * (2 * width - 1) + 3
    area = height * width
    first_row = tf.concat([[num_relative_distance - 1], tf.fill([area], num_relative_distance - 3)], axis=0)
    body = tf.concat([tf.fill([area, 1], num_relative_distance - 2), inner], axis=1)
    return tf.reshape(tf.concat([first_row[None, :], body], axis=0), [-1])


# ---------------------------------------------------------------------------------------------------------------
# Layers


class BeitDropPath(keras.layers.Layer):
    """Stochastic depth: in training, drops the residual branch of whole samples with probability `rate`."""

    def __init__(self, rate, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed_generator = keras.random.SeedGenerator() if self.rate > 0 else None

    def call(self, x, training=False):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = tf.concat([tf.shape(x)[:1], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
        noise = keras.random.uniform(shape, dtype=x.dtype, seed=self.seed_generator)
        return x / keep * tf.floor(keep + noise)


class BeitPatchEmbeddings(keras.layers.Layer):
    """The reference's patch x patch convolution with stride patch (`projection`, a Conv2D for its weights),
    computed as one MatMul + BiasAdd over the flattened patches: the same products, and on the CPU about 25%
    faster than TF's strided convolution in bfloat16 (grappler fuses the bias into the matmul)."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = config.patch_size_2d
        self.projection = keras.layers.Conv2D(
            config.hidden_size, config.patch_size_2d, strides=config.patch_size_2d, padding="valid",
            kernel_initializer=initializers.normal(config.initializer_range), name="projection")

    def call(self, pixel_values):
        """NHWC pixels -> ([batch, h * w, hidden], (h, w))."""
        if not self.projection.built:
            self.projection.build(pixel_values.shape)
        (patch_h, patch_w), channels = self.patch_size, pixel_values.shape[-1]
        height, width = _dim(pixel_values, 1) // patch_h, _dim(pixel_values, 2) // patch_w
        batch, hidden, dtype = tf.shape(pixel_values)[0], self.projection.filters, pixel_values.dtype
        if (pixel_values.shape[1], pixel_values.shape[2]) != (height * patch_h, width * patch_w):
            pixel_values = pixel_values[:, :height * patch_h, :width * patch_w]  # as the valid convolution
        patches = tf.reshape(pixel_values, tf.stack([batch, height, patch_h, width, patch_w, channels]))
        patches = tf.reshape(tf.transpose(patches, [0, 1, 3, 2, 4, 5]), [-1, patch_h * patch_w * channels])
        kernel = tf.reshape(tf.cast(self.projection.kernel, dtype), [-1, hidden])
        embeddings = tf.nn.bias_add(tf.matmul(patches, kernel), tf.cast(self.projection.bias, dtype))
        return tf.reshape(embeddings, tf.stack([batch, height * width, hidden])), (height, width)


class BeitEmbeddings(keras.layers.Layer):
    """[CLS] + patch embeddings (masked patches replaced by the mask token) + optional absolute positions."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.patch_embeddings = BeitPatchEmbeddings(config, name="patch_embeddings")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def build(self, input_shape=None):
        hidden, config = self.config.hidden_size, self.config
        self.cls_token = layers.add_weight(self, "cls_token", (1, 1, hidden), "zeros")
        if config.use_mask_token:
            self.mask_token = layers.add_weight(self, "mask_token", (1, 1, hidden), "zeros")
        if config.use_absolute_position_embeddings:
            window_h, window_w = config.window_size
            self.position_embeddings = layers.add_weight(self, "position_embeddings",
                                                         (1, window_h * window_w + 1, hidden), "zeros")
        self.built = True

    def interpolated_position_embeddings(self, height, width, dtype):
        """The position table resized (torch bicubic) to a height x width patch grid."""
        table = tf.cast(self.position_embeddings, dtype)
        window_h, window_w = self.config.window_size
        if _is_int(height, width) and (height, width) == (window_h, window_w):
            return table
        hidden = table.shape[-1]
        grid = tf.reshape(table[:, 1:], [1, window_h, window_w, hidden])
        grid = image_ops.interpolate_bicubic(grid, (height, width))
        return tf.concat([table[:, :1], tf.reshape(grid, [1, -1, hidden])], axis=1)

    def call(self, pixel_values, bool_masked_pos=None, training=False):
        embeddings, (height, width) = self.patch_embeddings(pixel_values)
        dtype = embeddings.dtype
        batch = tf.shape(embeddings)[0]
        if bool_masked_pos is not None:
            if not self.config.use_mask_token:
                raise ValueError("bool_masked_pos needs a mask token: set use_mask_token=True in the config")
            weight = tf.cast(bool_masked_pos, dtype)[:, :, None]
            embeddings = embeddings * (1.0 - weight) + tf.cast(self.mask_token, dtype) * weight
        cls_tokens = tf.broadcast_to(tf.cast(self.cls_token, dtype), tf.stack([batch, 1, embeddings.shape[-1]]))
        embeddings = tf.concat([cls_tokens, embeddings], axis=1)
        if self.config.use_absolute_position_embeddings:
            embeddings = embeddings + self.interpolated_position_embeddings(height, width, dtype)
        return self.dropout(embeddings, training=training), (height, width)


class BeitRelativePositionBias(keras.layers.Layer):
    """A learned bias per head for each relative offset between patches (plus three [CLS] entries), sized for
    config.window_size and resized bilinearly to other patch grids."""

    def __init__(self, config, window_size, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.window_size = tuple(window_size)
        self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3

    def build(self, input_shape=None):
        self.relative_position_bias_table = layers.add_weight(
            self, "relative_position_bias_table", (self.num_relative_distance, self.config.num_attention_heads),
            "zeros")
        self.built = True

    def call(self, index, window=None, dtype=None):
        """index: relative_position_index(h, w) for window (h, w), the input's patch grid.
        Returns the bias [1, heads, h*w+1, h*w+1]."""
        table = tf.cast(self.relative_position_bias_table, dtype)
        old_h, old_w = 2 * self.window_size[0] - 1, 2 * self.window_size[1] - 1
        new_h, new_w = 2 * window[0] - 1, 2 * window[1] - 1
        if not (_is_int(new_h, new_w) and (new_h, new_w) == (old_h, old_w)):
            heads = table.shape[-1]
            # As the reference: the (2h-1)(2w-1) offsets are viewed as an [old_w, old_h] grid and resized to
            # (new_h, new_w); the [CLS] rows are kept.
            grid = tf.reshape(table[:-3], [1, old_w, old_h, heads])
            grid = image_ops.interpolate_bilinear(grid, (new_h, new_w))
            table = tf.concat([tf.reshape(grid, [-1, heads]), table[-3:]], axis=0)
        tokens = window[0] * window[1] + 1
        # Whole rows (every head) gathered, then one transpose: on the CPU 3-5x faster than gathering single
        # elements along axis 1 of the transposed table, which took ~13% of a 384-pixel bfloat16 forward. The
        # reshape (a no-op) makes the table's gradient dense: tf.recompute_grad (gradient checkpointing)
        # mishandles the IndexedSlices gradient of a gather (a scalar came back for the table).
        bias = tf.transpose(tf.gather(tf.reshape(table, [-1, table.shape[-1]]), index))
        return tf.reshape(bias, tf.stack([1, table.shape[-1], tokens, tokens]))


class BeitSelfAttention(keras.layers.Layer):
    def __init__(self, config, window_size=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        ir = config.initializer_range
        self.query = layers.dense(config.hidden_size, ir, name="query")
        self.key = layers.dense(config.hidden_size, ir, use_bias=False, name="key")
        self.value = layers.dense(config.hidden_size, ir, name="value")
        self.dropout = layers.dropout(config.attention_probs_dropout_prob)
        self.relative_position_bias = None
        if window_size:
            self.relative_position_bias = BeitRelativePositionBias(config, window_size, name="relative_position_bias")

    def call(self, hidden_states, head_mask=None, shared_bias=None, window=None, index=None, training=False,
             need_probs=True):
        query, key, value = (attn.split_heads(layers.apply_dense(dense, hidden_states), self.num_heads, self.head_dim)
                             for dense in (self.query, self.key, self.value))
        bias = shared_bias
        if self.relative_position_bias is not None:
            own = self.relative_position_bias(index, window=window, dtype=hidden_states.dtype)
            bias = own if bias is None else own + bias
        context, probs = attn.scaled_dot_product_attention(query, key, value, bias, head_mask, self.dropout,
                                                           training, need_probs=need_probs)
        return attn.merge_heads(context), probs


class BeitSelfOutput(keras.layers.Layer):
    """dropout(dense(context)); BeitLayer scales it (lambda_1) and adds the residual, or, in inference, passes
    both here (`scale`, `residual`) to be folded into the projection."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def call(self, hidden_states, training=False, scale=None, residual=None):
        if residual is None:
            return self.dropout(layers.apply_dense(self.dense, hidden_states), training=training)
        return layers.apply_dense(self.dense, hidden_states, scale=scale, residual=residual)


class BeitAttention(keras.layers.Layer):
    def __init__(self, config, window_size=None, **kwargs):
        super().__init__(**kwargs)
        self.attention = BeitSelfAttention(config, window_size, name="attention")
        self.output_ = BeitSelfOutput(config, name="output")

    def call(self, hidden_states, head_mask=None, shared_bias=None, window=None, index=None, training=False,
             need_probs=True, scale=None, residual=None):
        context, probs = self.attention(hidden_states, head_mask, shared_bias, window=window, index=index,
                                        training=training, need_probs=need_probs)
        return self.output_(context, training=training, scale=scale, residual=residual), probs


class BeitOutput(keras.layers.Layer):
    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.dense(config.hidden_size, config.initializer_range, name="dense")
        self.dropout = layers.dropout(config.hidden_dropout_prob)

    def call(self, hidden_states, training=False):
        return self.dropout(layers.apply_dense(self.dense, hidden_states), training=training)


class BeitLayer(keras.layers.Layer):
    """x + drop_path(lambda_1 * attention(LN(x))), then + drop_path(lambda_2 * mlp(LN(.)))."""

    def __init__(self, config, window_size=None, drop_path_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.attention = BeitAttention(config, window_size, name="attention")
        self.intermediate = blocks.Intermediate(config, name="intermediate")
        self.output_ = BeitOutput(config, name="output")
        self.layernorm_before = layers.layer_norm(config.layer_norm_eps, name="layernorm_before")
        self.layernorm_after = layers.layer_norm(config.layer_norm_eps, name="layernorm_after")
        self.drop_path = BeitDropPath(drop_path_rate, name="drop_path")

    def build(self, input_shape=None):
        value = self.config.layer_scale_init_value
        if value > 0:
            hidden = self.config.hidden_size
            self.lambda_1 = layers.add_weight(self, "lambda_1", (hidden,), initializers.constant(value))
            self.lambda_2 = layers.add_weight(self, "lambda_2", (hidden,), initializers.constant(value))
        else:
            self.lambda_1 = self.lambda_2 = None
        self.built = True

    def feed_forward(self, hidden_states, training=False):
        output = self.output_(self.intermediate(self.layernorm_after(hidden_states)), training=training)
        if self.lambda_2 is not None:
            output = output * tf.cast(self.lambda_2, output.dtype)
        return output

    def call(self, hidden_states, head_mask=None, shared_bias=None, window=None, index=None, training=False,
             need_probs=True):
        normed = self.layernorm_before(hidden_states)
        options = dict(window=window, index=index, training=training, need_probs=need_probs)
        if not training:
            # Dropout and drop path are identities: layer scale and residual go into the output projection.
            hidden_states, probs = self.attention(normed, head_mask, shared_bias, scale=self.lambda_1,
                                                  residual=hidden_states, **options)
        else:
            attention_output, probs = self.attention(normed, head_mask, shared_bias, **options)
            if self.lambda_1 is not None:
                attention_output = attention_output * tf.cast(self.lambda_1, attention_output.dtype)
            hidden_states = self.drop_path(attention_output, training=training) + hidden_states
        output = apply_chunking(lambda x: self.feed_forward(x, training), self.config.chunk_size_feed_forward,
                                hidden_states)
        return self.drop_path(output, training=training) + hidden_states, probs


class BeitEncoder(keras.layers.Layer):
    def __init__(self, config, window_size, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.relative_position_bias = None
        if config.use_shared_relative_position_bias:
            self.relative_position_bias = BeitRelativePositionBias(config, window_size, name="relative_position_bias")
        rates = np.linspace(0.0, config.drop_path_rate, config.num_hidden_layers, dtype=np.float32).tolist()
        own_window = window_size if config.use_relative_position_bias else None
        self.layer = [BeitLayer(config, own_window, rates[i], name=f"layer_{i}")
                      for i in range(config.num_hidden_layers)]
        layers.share_one_graph(self.layer)  # the drop-path rates differ, but only in training

    def call(self, hidden_states, head_mask=None, window=None, output_attentions=False, output_hidden_states=False,
             training=False):
        config = self.config
        index = None
        if config.use_relative_position_bias or config.use_shared_relative_position_bias:
            index = relative_position_index(*window)
        shared_bias = None
        if self.relative_position_bias is not None:
            shared_bias = self.relative_position_bias(index, window=window, dtype=hidden_states.dtype)
        recompute = config.gradient_checkpointing and training

        def step(layer, hidden, layer_head_mask):
            return layers.run_layer(layer, recompute, hidden, layer_head_mask, shared_bias, window=window,
                                    index=index, training=training, need_probs=output_attentions)

        return run_encoder(self.layer, hidden_states, head_mask, step, output_attentions, output_hidden_states)


class BeitPooler(keras.layers.Layer):
    """Mean of the patch tokens then LayerNorm (use_mean_pooling), or the [CLS] hidden state."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        self.layernorm = layers.layer_norm(config.layer_norm_eps, name="layernorm") if config.use_mean_pooling \
            else None

    def call(self, hidden_states):
        if self.layernorm is not None:
            return self.layernorm(tf.reduce_mean(hidden_states[:, 1:], axis=1))
        return hidden_states[:, 0]


class BeitMainLayer(keras.layers.Layer):
    """Embeddings + encoder (+ final LayerNorm when not mean pooling) (+ pooler): what every head shares."""

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.embeddings = BeitEmbeddings(config, name="embeddings")
        self.encoder = BeitEncoder(config, config.window_size, name="encoder")
        self.layernorm = None if config.use_mean_pooling else layers.layer_norm(config.layer_norm_eps,
                                                                                 name="layernorm")
        self.pooler = BeitPooler(config, name="pooler") if add_pooling_layer else None

    def call(self, pixel_values=None, bool_masked_pos=None, head_mask=None, output_attentions=False,
             output_hidden_states=False, interpolate_pos_encoding=None, training=False):
        config = self.config
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        # Cast before the transpose: half the bytes moved in bfloat16.
        pixels = pixels_to_channels_last(tf.cast(pixel_values, self.compute_dtype), config.num_channels)
        height, width = _dim(pixels, 1), _dim(pixels, 2)
        patch_h, patch_w = config.patch_size_2d
        if _is_int(height, width) and (height < patch_h or width < patch_w):
            raise ValueError(f"pixel_values of size {height}x{width} is smaller than one patch "
                             f"({patch_h}x{patch_w})")
        window = patch_grid(config, height, width)
        if bool_masked_pos is not None:
            check_rank("bool_masked_pos", bool_masked_pos, 2)
            patches = window[0] * window[1]
            if _is_int(patches) and bool_masked_pos.shape[1] is not None and bool_masked_pos.shape[1] != patches:
                raise ValueError(f"bool_masked_pos has {bool_masked_pos.shape[1]} positions but the image has "
                                 f"{patches} patches ({window[0]}x{window[1]})")
        embedding_output, grid = self.embeddings(pixels, bool_masked_pos, training=training)
        encoded = self.encoder(embedding_output, head_mask, window=grid, output_attentions=output_attentions,
                               output_hidden_states=output_hidden_states, training=training)
        sequence_output = encoded.last_hidden_state
        if self.layernorm is not None:
            sequence_output = self.layernorm(sequence_output)
        return BeitModelOutputWithPooling(
            last_hidden_state=sequence_output,
            pooler_output=self.pooler(sequence_output) if self.pooler is not None else None,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions)


# ---------------------------------------------------------------------------------------------------------------
# Segmentation heads (UperNet decode head with pyramid pooling, FCN auxiliary head), channels-last


class BeitConvModule(keras.layers.Layer):
    """Conv2D (no bias) -> BatchNorm -> ReLU, with torch's zero padding."""

    def __init__(self, out_channels, kernel_size, initializer_range, padding=0, dilation=1, use_bias=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.padding = 0
        if padding == 0:
            mode = "valid"
        elif 2 * padding == dilation * (kernel_size - 1):
            mode = "same"
        else:
            mode, self.padding = "valid", padding
        self.conv = keras.layers.Conv2D(out_channels, kernel_size, padding=mode, dilation_rate=dilation,
                                        use_bias=use_bias, kernel_initializer=initializers.normal(initializer_range),
                                        name="conv")
        self.bn = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="bn")

    def call(self, x, training=False):
        if self.padding:
            x = tf.pad(x, [[0, 0], [self.padding, self.padding], [self.padding, self.padding], [0, 0]])
        return tf.nn.relu(self.bn(self.conv(x), training=training))


def _conv1x1(channels, initializer_range, name):
    return keras.layers.Conv2D(channels, 1, kernel_initializer=initializers.normal(initializer_range), name=name)


def _size(x):
    return _dim(x, 1), _dim(x, 2)


class BeitUperHead(keras.layers.Layer):
    """UperNet: pyramid pooling on the last feature map, an FPN top-down path over the four maps, fused."""

    def __init__(self, config, **kwargs):
        super().__init__(**kwargs)
        ir, channels = config.initializer_range, config.hidden_size
        self.pool_scales = list(config.pool_scales)
        self.classifier = _conv1x1(config.num_labels, ir, "classifier")
        self.psp_modules = [BeitConvModule(channels, 1, ir, name=f"psp_{i}") for i in range(len(self.pool_scales))]
        self.bottleneck = BeitConvModule(channels, 3, ir, padding=1, name="bottleneck")
        self.lateral_convs = [BeitConvModule(channels, 1, ir, name=f"lateral_{i}") for i in range(3)]
        self.fpn_convs = [BeitConvModule(channels, 3, ir, padding=1, name=f"fpn_{i}") for i in range(3)]
        self.fpn_bottleneck = BeitConvModule(channels, 3, ir, padding=1, name="fpn_bottleneck")

    def call(self, features, training=False):
        laterals = [conv(features[i], training=training) for i, conv in enumerate(self.lateral_convs)]
        top = features[-1]
        pyramid = [top]
        for scale, module in zip(self.pool_scales, self.psp_modules):
            pooled = module(image_ops.adaptive_avg_pool(top, (scale, scale)), training=training)
            pyramid.append(image_ops.interpolate_bilinear(pooled, _size(top)))
        laterals.append(self.bottleneck(tf.concat(pyramid, axis=-1), training=training))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + image_ops.interpolate_bilinear(laterals[i], _size(laterals[i - 1]))
        fpn_outs = [self.fpn_convs[i](laterals[i], training=training) for i in range(len(laterals) - 1)]
        fpn_outs.append(laterals[-1])
        for i in range(len(fpn_outs) - 1, 0, -1):
            fpn_outs[i] = image_ops.interpolate_bilinear(fpn_outs[i], _size(fpn_outs[0]))
        return self.classifier(self.fpn_bottleneck(tf.concat(fpn_outs, axis=-1), training=training))


class BeitFCNHead(keras.layers.Layer):
    """The auxiliary head: auxiliary_num_convs conv modules on feature map `in_index` (optionally concatenated
    with their input), then a 1x1 classifier."""

    def __init__(self, config, in_index=2, kernel_size=3, dilation=1, **kwargs):
        super().__init__(**kwargs)
        ir, channels = config.initializer_range, config.auxiliary_channels
        self.in_index = in_index
        padding = (kernel_size // 2) * dilation
        self.convs = [BeitConvModule(channels, kernel_size, ir, padding=padding, dilation=dilation, name=f"conv_{i}")
                      for i in range(config.auxiliary_num_convs)]
        self.conv_cat = None
        if config.auxiliary_concat_input:
            self.conv_cat = BeitConvModule(channels, kernel_size, ir, padding=kernel_size // 2, name="conv_cat")
        self.classifier = _conv1x1(config.num_labels, ir, "classifier")

    def call(self, features, training=False):
        hidden_states = features[self.in_index]
        output = hidden_states
        for conv in self.convs:
            output = conv(output, training=training)
        if self.conv_cat is not None:
            output = self.conv_cat(tf.concat([hidden_states, output], axis=-1), training=training)
        return self.classifier(output)


# ---------------------------------------------------------------------------------------------------------------
# Models


class BeitPreTrainedModel(PreTrainedModel):
    config_class = BeitConfig
    base_model_prefix = "beit"
    main_input_name = "pixel_values"
    input_names = ("pixel_values", "head_mask")
    option_names = DEFAULT_OPTIONS + ("interpolate_pos_encoding",)
    serving_input_names = ("pixel_values",)
    checkpoint_map = BEIT_CHECKPOINT_MAP
    input_embeddings_path = "embeddings.patch_embeddings"  # HF's get_input_embeddings
    supports_head_pruning = True

    @staticmethod
    def attention_parts(layer):
        return layer.attention.attention, layer.attention.output_.dense

    def _check_head_pruning(self):
        if self.config.use_relative_position_bias or self.config.use_shared_relative_position_bias:
            # HF prunes query/key/value but not the per-head bias tables, and then fails on the shape mismatch.
            raise NotImplementedError(f"{type(self).__name__}: head pruning with relative position bias is not "
                                      "supported (the reference fails there too: its per-head bias tables are "
                                      "not pruned)")

    def dummy_inputs(self):
        # A 2x2 patch grid builds every weight (tables are sized by the config, not the input) and is cheap
        # even for 640x640 configs.
        patch_h, patch_w = self.config.patch_size_2d
        pixels = np.random.RandomState(0).uniform(-1, 1, (2, self.config.num_channels, 2 * patch_h, 2 * patch_w))
        inputs = {"pixel_values": pixels.astype(np.float32)}
        if self.config.use_mask_token and "bool_masked_pos" in self.input_names:
            inputs["bool_masked_pos"] = np.array([[1, 0, 0, 1], [0, 1, 0, 0]], np.int32)
        return inputs

    def serving_input_spec(self, name):
        if name == "bool_masked_pos":
            return tf.TensorSpec([None, None], tf.int32, name=name)
        return super().serving_input_spec(name)


class BeitModel(tasks.BaseModelTask, BeitPreTrainedModel):
    """The bare encoder: hidden states and the pooled output (mean pooling or [CLS])."""

    output_class = BeitModelOutputWithPooling
    input_names = ("pixel_values", "bool_masked_pos", "head_mask")

    def __init__(self, config, add_pooling_layer=True, **kwargs):
        super().__init__(config, **kwargs)
        self.beit = BeitMainLayer(config, add_pooling_layer=add_pooling_layer, name="beit")


class BeitForMaskedImageModeling(tasks.MaskedLMTask, BeitPreTrainedModel):
    """Predicts the visual tokens (vocab_size of them) of the masked patches.

    labels: either the tokens of the masked patches in row-major order, [num_masked] (the reference's form), or
    per-patch tokens [batch, num_patches] of which only the masked ones count (a form that batches, for fit).
    Labels equal to -100 are ignored."""

    input_names = ("pixel_values", "bool_masked_pos", "head_mask")
    serving_input_names = ("pixel_values", "bool_masked_pos")

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.beit = BeitMainLayer(config, add_pooling_layer=False, name="beit")
        self.layernorm = layers.layer_norm(config.layer_norm_eps, name="layernorm")
        self.lm_head = layers.dense(config.vocab_size, config.initializer_range, name="lm_head")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.lm_head(self.layernorm(base_outputs.last_hidden_state)[:, 1:])}

    def task_loss(self, labels, outputs, inputs):
        masked = inputs.get("bool_masked_pos")
        if masked is None:
            raise ValueError("BeitForMaskedImageModeling needs bool_masked_pos to compute a loss from labels")
        labels, logits = tf.cast(labels["labels"], tf.int32), outputs["logits"]
        masked = tf.cast(masked, tf.bool)
        check_rank("labels", labels, (1, 2))
        if labels.shape.rank == 2:
            return losses.cross_entropy(logits, tf.where(masked, labels, losses.IGNORE_INDEX))
        return losses.cross_entropy(tf.boolean_mask(logits, masked), labels)


class BeitForImageClassification(tasks.ImageClassificationTask, BeitPreTrainedModel):
    """A linear classifier on the pooled output (mean of the patch tokens, or [CLS])."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.beit = BeitMainLayer(config, add_pooling_layer=True, name="beit")
        self.classifier = layers.dense(config.num_labels, config.initializer_range, name="classifier")

    def head(self, base_outputs, inputs, training=False):
        return {"logits": self.classifier(base_outputs.pooler_output)}


class BeitForSemanticSegmentation(tasks.SemanticSegmentationTask, BeitPreTrainedModel):
    """UperNet on four encoder feature maps (config.out_indices), rescaled by the FPN stems (x4, x2, x1, x0.5),
    with the auxiliary FCN head (use_auxiliary_head). logits: [batch, num_labels, 4h, 4w] for an h x w patch grid;
    labels [batch, H, W], loss at the label size with semantic_loss_ignore_index ignored.

    The reference reshapes the feature maps to config.image_size // patch_size; we use the input's patch grid,
    which is the same at the configured size and also works at other sizes."""

    base_options = {"output_hidden_states": True}

    def __init__(self, config, **kwargs):
        if len(config.out_indices) != 4:
            raise ValueError("BeitForSemanticSegmentation requires config.out_indices to be a list of 4 integers, "
                             "specifying which features to use from the backbone. One can use [3, 5, 7, 11] in case "
                             f"of a base-sized architecture; got {config.out_indices}")
        super().__init__(config, **kwargs)
        hidden, ir = config.hidden_size, config.initializer_range
        self.beit = BeitMainLayer(config, add_pooling_layer=False, name="beit")

        def up(name):
            return keras.layers.Conv2DTranspose(hidden, 2, strides=2, kernel_initializer=initializers.normal(ir),
                                                name=name)

        self.fpn1 = [up("fpn1_0"), keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="fpn1_1"),
                     keras.layers.Activation(get_activation("gelu"), name="fpn1_2"), up("fpn1_3")]
        self.fpn2 = [up("fpn2_0")]
        self.decode_head = BeitUperHead(config, name="decode_head")
        self.auxiliary_head = BeitFCNHead(config, name="auxiliary_head") if config.use_auxiliary_head else None

    def head(self, base_outputs, inputs, training=False):
        config = self.config
        pixels = pixels_to_channels_last(inputs["pixel_values"], config.num_channels)
        grid_h, grid_w = patch_grid(config, _dim(pixels, 1), _dim(pixels, 2))
        batch = tf.shape(pixels)[0]
        # hidden_states[0] is the embedding output: out index i takes hidden_states[i - 1], as the reference.
        features = [state for i, state in enumerate(base_outputs.hidden_states) if i + 1 in config.out_indices]
        features = [tf.reshape(state[:, 1:], tf.stack([batch, grid_h, grid_w, config.hidden_size]))
                    for state in features]
        x = features[0]
        for layer in self.fpn1:
            x = layer(x, training=training) if isinstance(layer, keras.layers.BatchNormalization) else layer(x)
        features = [x, self.fpn2[0](features[1]), features[2],
                    tf.nn.max_pool2d(features[3], ksize=2, strides=2, padding="VALID")]
        result = {"logits": tf.transpose(self.decode_head(features, training=training), [0, 3, 1, 2])}
        if self.auxiliary_head is not None:
            result["_auxiliary_logits"] = tf.transpose(self.auxiliary_head(features, training=training),
                                                       [0, 3, 1, 2])
        return result


# The TF names of the reference documents are the same classes.
TFBeitModel = BeitModel
TFBeitForMaskedImageModeling = BeitForMaskedImageModeling
TFBeitForImageClassification = BeitForImageClassification
TFBeitForSemanticSegmentation = BeitForSemanticSegmentation
