"""Small layer builders used by every family, so that initialisation and dtype handling live in one place.

Name sub-layers after the modules of the reference implementation (`self.query`, `self.LayerNorm`, ...):
the checkpoint walker derives PyTorch state-dict names from attribute names, so matching names make the
per-family checkpoint map nearly empty.
"""
import contextlib
import math
import weakref

import keras
import tensorflow as tf

from tfmodels.core import activations, gradients, initializers
from tfmodels.ops import dense_epilogue as dense_epilogue_op
from tfmodels.ops import layer_norm as layer_norm_op


def dense(units, initializer_range, name=None, use_bias=True, **kwargs):
    return keras.layers.Dense(units, use_bias=use_bias, kernel_initializer=initializers.normal(initializer_range),
                              bias_initializer="zeros", name=name, **kwargs)


def layer_norm(epsilon, name=None, **kwargs):
    # Keras normalises bf16/fp16 inputs in float32 and returns the compute dtype: safe under mixed precision.
    return LayerNormalization(epsilon=epsilon, name=name, **kwargs)


@keras.saving.register_keras_serializable(package="tfmodels")
class LayerNormalization(keras.layers.LayerNormalization):
    """Keras' LayerNormalization; bfloat16 and float32 inference on the CPU over the last axis (with gamma and beta)
    runs the fused op of tfmodels.ops.layer_norm, one pass over the tensor where Keras makes about ten. The same
    float32 arithmetic, rounded once; Keras' computation is the op's twin and its gradient."""

    def call(self, inputs, training=None):
        rank = inputs.shape.rank
        fusable = (training is None or training is False) and self.center and self.scale and \
            not self.rms_scaling and rank is not None and [a % rank for a in self.axis] == [rank - 1] and \
            layer_norm_op.use_fused_layer_norm(inputs)
        if not fusable:
            return super().call(inputs)

        def twin(x, gamma, beta):
            outputs = keras.ops.layer_normalization(x, gamma, beta, axis=-1, epsilon=self.epsilon)
            return tf.cast(outputs, x.dtype)
        return layer_norm_op.fused_layer_norm(inputs, self.gamma, self.beta, self.epsilon, twin)


@keras.saving.register_keras_serializable(package="tfmodels")
class Embedding(keras.layers.Embedding):
    """keras.layers.Embedding that, when its table is partitioned across parameter servers (a ShardedVariable,
    see training.parameter_server), gathers only the rows it needs from each shard instead of fetching the whole table.
    Otherwise it is exactly Keras' layer."""

    def call(self, inputs):
        table = getattr(self._embeddings, "value", None) if not self.lora_enabled and \
            self.quantization_mode is None else None
        if table is None or isinstance(table, tf.Variable) or not hasattr(table, "variables"):
            return super().call(inputs)
        ids = tf.cast(inputs, tf.int32) if inputs.dtype not in (tf.int32, tf.int64) else inputs
        return tf.cast(tf.nn.embedding_lookup(table, ids), self.compute_dtype)


def shape_list(x):
    """x's dimensions: a Python int where the static shape knows it, else a scalar tensor (tf.shape(x)[i]).

    In eager mode every dimension is known, so a reshape to [batch, seq, ...] built from these is one op with
    one constant, where tf.shape(x)[i] costs a Shape, a StridedSlice and three constants per dimension. Each small
    eager op is Python overhead: with this (and apply_dense's flattening inside its graph function), an XLM-R-XL
    layer ran ~60 eager ops instead of ~170, ~13 ms less per layer on a 2-core EPYC (measured in bfloat16; its
    layers now run in SharedLayerGraph, and only the families without it still run op by op). In a graph the
    unknown dimensions stay dynamic."""
    static = x.shape.as_list()
    if None not in static:
        return static
    dynamic = tf.shape(x)
    return [dynamic[i] if size is None else size for i, size in enumerate(static)]


def permute(x, perm):
    """tf.transpose(x, perm), the same values, as a one-operand einsum. Why: TF's einsum permutes with its Eigen
    transpose, while in TF's oneDNN build tf.transpose is rewritten to oneDNN's reorder (_MklTranspose), whose
    fixed cost per call dominates at the attention's sizes: on the AMD EPYC, 2 threads, 73 against 132 us at
    [1, 512, 4, 64] -> [1, 4, 512, 64], 155 against 337 us at [1, 4096, 4, 64], the same or less at every head
    split of the benchmarks. Up to rank 8."""
    letters = "abcdefgh"[:len(perm)]
    return tf.einsum(f"{letters}->{''.join(letters[axis] for axis in perm)}", x)


def embedding(num, dim, initializer_range, name=None, **kwargs):
    return Embedding(num, dim, embeddings_initializer=initializers.normal(initializer_range), name=name, **kwargs)


def dropout(rate, name=None):
    return keras.layers.Dropout(rate or 0.0, name=name)


def apply_dense(layer, inputs, activation=None, scale=None, residual=None):
    """`residual + scale * activation(layer(inputs))` for a keras Dense `layer` (no scale: 1, no residual: 0),
    computed as a 2-D MatMul + BiasAdd (+ activation) (+ Add).

    The same numbers as calling the layer (same variables, the inputs' compute dtype), but on CPU grappler's
    oneDNN remapper fuses MatMul + BiasAdd (+ Gelu / Relu / Tanh ...) (+ Add) into one kernel, which it does not
    do for the batched matmul and add that a Keras 3 Dense emits for rank-3 inputs: a transformer feed-forward block
    with exact GELU runs about 30% faster. Passing the residual here (rather than adding it to the result) keeps
    the add in that kernel: no separate pass over the activations. `scale` (a layer scale, a scalar or a vector
    over the units) is folded into the kernel and bias, so it allows no activation.
    With TFMODELS_BF16_PRODUCT=matmul, bfloat16 on the CPU (with no activation or exact GELU) runs as a MatMul
    alone, oneDNN's matmul primitive that PyTorch's linear runs too, then the bias, activation and residual in one
    op of ours (tfmodels.ops.dense_epilogue, which compares the two forms).
    The layer is built here if needed (it is never `__call__`ed). A quantized layer (its kernel is not a plain
    float matrix) is called as usual."""
    if scale is not None and activation is not None:
        raise ValueError("apply_dense folds `scale` into the kernel and bias: it cannot take an activation too")
    if not layer.built:
        layer.build(inputs.shape)
    if initializers.init_is_skipped():
        # from_pretrained's build pass: the kernel is a placeholder (memory the loader replaces, see
        # initializers.skip_init), so the product would be meaningless, and computing it would fault in every
        # page of it (2 s of a 3.5B-parameter load). Zeros of the output's shape serve the rest of that pass.
        outputs = tf.zeros(tf.stack(shape_list(inputs)[:-1] + [layer.units]), inputs.dtype)
        outputs.set_shape(inputs.shape[:-1].concatenate([layer.units]))
        return outputs
    if getattr(layer, "quantization_mode", None):
        outputs = layer(inputs)
        outputs = activation(outputs) if activation is not None else outputs
        outputs = outputs * tf.cast(scale, outputs.dtype) if scale is not None else outputs
        return outputs + residual if residual is not None else outputs
    dtype = inputs.dtype
    own_activation = layer.activation if layer.activation is not keras.activations.linear else None
    if scale is not None and own_activation is not None:
        raise ValueError(f"apply_dense folds `scale` into the kernel and bias: {layer.name} has an activation")
    kernel, bias = layer.kernel, layer.bias if layer.use_bias else None
    if scale is not None:
        kernel = kernel * tf.cast(scale, kernel.dtype)
        bias = bias * tf.cast(scale, bias.dtype) if bias is not None else None
    epilogue = _epilogue_activation(own_activation, activation)
    if epilogue is not None and dense_epilogue_op.use_dense_epilogue(dtype):
        outputs = _matmul_then_epilogue(inputs, tf.cast(kernel, dtype), bias, residual, epilogue)
    else:
        matrix = _matmul_bias_activation
        if tf.executing_eagerly() and dtype in (tf.bfloat16, tf.float16):
            matrix = _fused_matmul_bias_activation
        outputs = matrix(inputs, tf.cast(kernel, dtype), tf.cast(bias, dtype) if bias is not None else None,
                         residual, own_activation, activation)
    outputs.set_shape(inputs.shape[:-1].concatenate([layer.units]))
    return outputs


def apply_dense_dropout_residual(layer, dropout, inputs, residual, training=False):
    """`residual + dropout(layer(inputs))`, the output of a transformer sub-block. Where the dropout is the
    identity (not training, or rate 0) the residual goes to apply_dense, whose fused kernel adds it; training with
    dropout keeps the separate ops."""
    if training and dropout.rate:
        return dropout(apply_dense(layer, inputs), training=training) + residual
    return apply_dense(layer, inputs, residual=residual)


def apply_dense_exact_gelu(layer, inputs):
    """Exact GELU of apply_dense(layer, inputs), for a model whose eager calls and graphs must agree to the bit
    (XLNet's generation loop and beam search call it both ways): apply_dense with a GELU does not, as oneDNN fuses
    its own GELU into graphs only and it rounds otherwise than TF's Gelu kernel. In float32 on the CPU, a MatMul
    and our epilogue op, the same op in both: the bias and GELU in one pass where TF takes four
    (tfmodels.ops.dense_epilogue; the op mode decides, as for every op). Otherwise MatMul + BiasAdd, then
    `exact_gelu`'s element-wise ops."""
    if not layer.built:
        layer.build(inputs.shape)
    plain = not getattr(layer, "quantization_mode", None) and layer.activation is keras.activations.linear
    if plain and not initializers.init_is_skipped() and dense_epilogue_op.use_exact_gelu_epilogue(inputs.dtype):
        bias = tf.cast(layer.bias, inputs.dtype) if layer.use_bias else None
        outputs = _matmul_then_epilogue(inputs, tf.cast(layer.kernel, inputs.dtype), bias, None, "gelu")
        outputs.set_shape(inputs.shape[:-1].concatenate([layer.units]))
        return outputs
    return exact_gelu(apply_dense(layer, inputs))


def exact_gelu(x):
    """tf.nn.gelu(x, approximate=False), bit for bit, in four element-wise passes instead of five: x * -c is
    exactly -(x * c), so no separate negation."""
    return (0.5 * x) * tf.math.erfc(x * tf.cast(-math.sqrt(0.5), x.dtype))


def _matmul_bias_activation(inputs, kernel, bias, residual, *activations):
    """inputs [..., in] (and residual [..., out]) as 2-D matrices through the fused ops, reshaped back."""
    features, units = shape_list(kernel)
    output_shape = _output_shape(inputs, units)
    outputs = tf.matmul(tf.reshape(inputs, [-1, features]), kernel)
    if bias is not None:
        outputs = tf.nn.bias_add(outputs, bias)
    for activation in activations:
        if activation is not None:
            outputs = activation(outputs)
    if residual is not None:
        outputs = outputs + tf.reshape(residual, [-1, units])
    return tf.reshape(outputs, output_shape)


def _epilogue_activation(*candidates):
    """The name tfmodels.ops.dense_epilogue knows for the activations applied after a product (None: none), or
    None where it has none for them."""
    chosen = [a for a in candidates if a is not None]
    if not chosen:
        return "linear"
    if chosen == [activations.gelu]:
        return "gelu"
    return None


def _matmul_then_epilogue(inputs, kernel, bias, residual, activation):
    """inputs [..., in] as a 2-D MatMul alone, then dense_epilogue's activation(product + bias) (+ residual)."""
    features, units = shape_list(kernel)
    output_shape = _output_shape(inputs, units)
    product = tf.matmul(tf.reshape(inputs, [-1, features]), kernel)
    bias = tf.zeros([units], product.dtype) if bias is None else bias
    residual = None if residual is None else tf.reshape(residual, [-1, units])
    outputs = dense_epilogue_op.dense_epilogue(product, bias, residual, activation)
    return tf.reshape(outputs, output_shape)


def _output_shape(inputs, units):
    """inputs' shape with `units` for its last axis, as a reshape takes it."""
    if inputs.shape.rank is None:  # a graph function relaxed over calls with inputs of several ranks
        return tf.concat([tf.shape(inputs)[:-1], [units]], axis=0)
    return shape_list(inputs)[:-1] + [units]


# The same ops as a graph function, for half-precision inputs in eager mode (big checkpoints run eagerly): the
# fusion above happens only in graphs, and unfused, the activation is the slow part, e.g. exact GELU in bfloat16
# is a scalar erfc per element in Eigen, 6x the time of the AMX matmul before it (oneDNN's fused kernel applies it
# to the float32 accumulator). One function serves every layer: traced once per input signature (shapes are
# relaxed after a second one) and per activation, not once per layer. Float32 stays op by op here (in the families
# whose layers share one graph, SharedLayerGraph runs the whole layer as a graph in every dtype).
_fused_matmul_bias_activation = tf.function(_matmul_bias_activation, reduce_retracing=True)


def add_weight(layer, name, shape, initializer, trainable=True, dtype=None):
    """layer.add_weight that also remembers the initializer, so that a weight a checkpoint lacks can be
    initialised properly after a build that skipped initialisation (see initializers.skip_init)."""
    if not hasattr(layer, "_tfm_initializers"):
        layer._tfm_initializers = {}
    if isinstance(initializer, keras.initializers.Initializer) and not isinstance(
            initializer, initializers.SkippableInitializer):
        initializer = initializers.SkippableInitializer(initializer)
    elif isinstance(initializer, str) and initializer not in ("zeros", "ones"):
        initializer = initializers.SkippableInitializer(initializer)
    layer._tfm_initializers[name] = initializer
    return layer.add_weight(name=name, shape=shape, initializer=initializer, trainable=trainable, dtype=dtype)


@contextlib.contextmanager
def dtype_policy_scope(policy):
    """Layers constructed inside take `policy` ("float32", "bfloat16", "mixed_bfloat16", ...)."""
    if policy is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def apply_chunking(fn, chunk_size, hidden_states):
    """fn over chunks of `chunk_size` positions (axis 1), one chunk at a time (HF's chunk_size_feed_forward):
    the same numbers as fn(hidden_states) with the feed-forward activations of one chunk alive at a time."""
    if not chunk_size:
        return fn(hidden_states)
    length = hidden_states.shape[1]
    if length is not None and length % chunk_size:
        raise ValueError(f"chunk_size_feed_forward={chunk_size} must divide the sequence length {length}")
    batch, seq, dim = tf.shape(hidden_states)[0], tf.shape(hidden_states)[1], hidden_states.shape[-1]
    chunks = tf.reshape(hidden_states, [batch, seq // chunk_size, chunk_size, dim])
    chunks = tf.transpose(chunks, [1, 0, 2, 3])
    results = tf.map_fn(fn, chunks, fn_output_signature=hidden_states.dtype)
    results = tf.transpose(results, [1, 0, 2, 3])
    return tf.reshape(results, [batch, seq, results.shape[-1]])


def _seed_generators(layer):
    """The Keras SeedGenerators of `layer` and its sub-layers (Dropout keeps its own)."""
    if not isinstance(layer, keras.layers.Layer):
        raise TypeError(f"run_layer needs the Keras layer itself (its dropout seeds are replayed in the "
                        f"recomputation), not {type(layer).__name__}; pass extra arguments as keyword arguments")
    found, seen = [], set()
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(sub, "_seed_generators", []):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def run_layer(layer, recompute, *args, **kwargs):
    """layer(*args, **kwargs), recomputed in the backward pass when `recompute` (gradient checkpointing).

    Only the layer's inputs are kept for the backward pass; its activations are recomputed there, layer by
    layer (core.gradients.recompute_grad, tf.recompute_grad's algorithm), in eager mode and inside tf.function
    alike. Tensor arguments (including nested ones, e.g. a key/value cache) become explicit inputs of the
    recomputed function, so gradients reach all of them; None outputs are restored afterwards.

    Randomness: the recomputation must draw the same dropout masks as the forward pass, or the gradients
    would belong to a different function. The states of the layer's Keras SeedGenerators (every Keras Dropout
    has one) are saved before the forward pass and restored before the recomputation, which then advances them
    exactly as the forward pass did. Randomness inside a recomputed layer must therefore come from
    SeedGenerators tracked by its layers (a `keras.random.SeedGenerator` attribute), not from global state.
    """
    if not recompute:
        shared = getattr(layer, "_tfm_shared_graph", None)
        if shared is not None and shared.serves(layer, kwargs):
            return shared(layer, *args, **kwargs)
        return layer(*args, **kwargs)
    leaves = tf.nest.flatten(args)
    tensor_positions = [i for i, leaf in enumerate(leaves) if tf.is_tensor(leaf)]
    structure = {"calls": 0}
    generators = _seed_generators(layer)
    saved_states = [tf.identity(generator.state.value) for generator in generators]

    def recomputed(*tensors):
        if structure["calls"]:  # the recomputation in the backward pass: replay the forward pass's seeds
            for generator, state in zip(generators, saved_states):
                generator.state.assign(state)
        structure["calls"] += 1
        filled = list(leaves)
        for position, tensor in zip(tensor_positions, tensors):
            filled[position] = tensor
        result = layer(*tf.nest.pack_sequence_as(args, filled), **kwargs)
        flat = tf.nest.flatten(result)
        structure["result"] = result
        structure["present"] = [i for i, leaf in enumerate(flat) if leaf is not None]
        return [flat[i] for i in structure["present"]]

    values = gradients.recompute_grad(recomputed)(*[leaves[i] for i in tensor_positions])
    flat = [None] * len(tf.nest.flatten(structure["result"]))
    for position, value in zip(structure["present"], values):
        flat[position] = value
    return tf.nest.pack_sequence_as(structure["result"], flat)


def share_one_graph(stack):
    """Marks the layers of `stack` (one encoder's layers, built from one config) as computing one function of their
    own weights, so that run_layer may run every one of them through one graph function (SharedLayerGraph).
    A family calls this only where nothing but the weights tells its layers apart at inference: not where a layer's
    index sets its attention window (Longformer) or its hashing seed (YOSO)."""
    shared = SharedLayerGraph(stack[0])
    for layer in stack:
        layer._tfm_shared_graph = shared  # a plain object: Keras and tf.saved_model track nothing through it


class SharedLayerGraph:
    """One graph function that runs any layer of a stack of interchangeable layers, the layer's weights passed in.

    Why: big checkpoints run eagerly, as HF's users call them, and eager mode pays Python and dispatch for every op
    of every layer: ~20 ms per XLM-R-XL layer on a 2-core EPYC, ~0.7 s of the 36-layer model's forward on 2 x 512
    tokens, besides the kernels' ~15 s. One tf.function per layer would trace 36 times (seconds of the first
    forward); this one traces the first layer once (shapes are relaxed after a second signature) and runs every
    layer with its own weights mapped onto the first layer's (keras.StatelessScope), so grappler also fuses
    across the whole layer. Weights only: the seed generators' states are not mapped, since inference draws no
    randomness (BEiT's layers differ in drop-path rate, and so in whether they have a seed generator at all).

    It serves inference in every dtype, float32 included: most users of the reference call a model eagerly in
    float32, where per-op dispatch is most of a short input's time (a 12-layer, 768-wide XLM-R-XL at 128 tokens:
    ~240 ms op by op, ~150 ms shared, AMD EPYC). Its numbers are a graph's, as under tf.function or
    model.predict: grappler's fusions move them within float32 rounding of the op-by-op ones (4e-6 at most on
    that model). Training keeps run_layer's plain call (dropout draws from each layer's own seed generators)."""

    def __init__(self, template):
        self._template = weakref.ref(template)  # the stack's layers hold this object: no reference cycle back
        self._function = tf.function(self._run, reduce_retracing=True)
        self._template_built = False

    def serves(self, layer, kwargs):
        """Whether `layer` runs through the graph function in this call. A layer whose weights are not like the
        template's (e.g. LoRA enabled on some layers only) takes its plain call."""
        template = self._template()
        return (template is not None and tf.executing_eagerly() and not kwargs.get("training")
                and not initializers.init_is_skipped()
                and self._fully_built(template)
                and [(v.shape, v.dtype) for v in layer.weights] == [(v.shape, v.dtype) for v in template.weights])

    def _fully_built(self, template):
        # A Keras layer without a build method counts as built before its sub-layers have made their variables
        # (on its first call); the template's weights must all exist before they are mapped. An unbuilt layer
        # has fewer weights than the built template, so it takes the plain call, which builds it.
        if not self._template_built:
            self._template_built = all(sub.built for sub in template._flatten_layers(include_self=True))
        return self._template_built

    def __call__(self, layer, *args, **kwargs):
        return self._function([weight.value for weight in layer.weights], args, kwargs)

    def _run(self, values, args, kwargs):
        template = self._template()
        with keras.StatelessScope(state_mapping=list(zip(template.weights, values))):
            return template(*args, **kwargs)

    @property
    def tracing_count(self):
        """How many graphs the function has traced (one per input signature, whatever the number of layers)."""
        return self._function.experimental_get_tracing_count()
