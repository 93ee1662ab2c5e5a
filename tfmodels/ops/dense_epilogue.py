"""The epilogue of a dense layer as one CPU op (custom_ops/dense_epilogue): activation(x + bias) (+ residual) on a
MatMul's product, in float32 (a bfloat16 product rounded once).

TF's oneDNN build runs a bfloat16 product in one of two primitives, and `TFMODELS_BF16_PRODUCT` picks which one
core.layers.apply_dense uses (`bf16_product_form`):
- "inner_product" (the default): MatMul + BiasAdd (+ GELU) (+ Add), which TF's remapper fuses into oneDNN's
  inner-product primitive on plain weights (ONEDNN_VERBOSE: `inner_product,x64:gemm:jit`, oneDNN's gemm kernels),
  with the bias, activation and residual applied to the float32 accumulator;
- "matmul": a MatMul that nothing follows, oneDNN's matmul primitive (`brg_matmul`, the brgemm kernels PyTorch's
  bfloat16 `linear` runs, on AMX tiles where the CPU has them), then this op. After a plain MatMul TF would take a
  pass over the product per op, and its bfloat16 GELU is a scalar erfc per element; this op is one vectorised
  pass.
On the AMD EPYC (avx512_bf16, no AMX) the inner product is the faster (an XLM-R-XL layer ~6% faster; measured in
docs/benchmarks.md). On the Intel Xeon with AMX, PyTorch's brgemm kernels ran the model's projections 1.15-2.14x
faster than TF's inner product; whether TF's own brgemm build does is what `benchmarks/bench_bf16_matmul.py` and
`benchmarks/bench_large.py` measure there, in both forms.

In float32 the op runs core.layers.apply_dense_exact_gelu (XLNet's feed-forward, whose bits must not depend on the
call style): the bias and exact GELU in one pass where TF's GELU takes four (`use_exact_gelu_epilogue`). oneDNN's
fused GELU is one pass too, but only in graphs, and it rounds otherwise than TF's eager Gelu.

The op's twin, `epilogue_twin`, is the same float32 arithmetic in stock TF ops (exact GELU through tf.nn.gelu):
the tests compare the two, and the op's gradient differentiates the twin.
"""
import os

import tensorflow as tf

from tfmodels.ops import dispatch

FAMILY = "dense_epilogue"
ACTIVATIONS = ("linear", "gelu")
PRODUCT_FORMS = ("inner_product", "matmul")
DEFAULT_PRODUCT_FORM = "inner_product"  # the faster on the AMD EPYC; unmeasured against "matmul" on AMX


def bf16_product_form():
    """The bfloat16 product form TFMODELS_BF16_PRODUCT names (PRODUCT_FORMS; default DEFAULT_PRODUCT_FORM)."""
    form = os.environ.get("TFMODELS_BF16_PRODUCT", DEFAULT_PRODUCT_FORM)
    if form not in PRODUCT_FORMS:
        raise ValueError(f"TFMODELS_BF16_PRODUCT must be one of {PRODUCT_FORMS}, got {form!r}")
    return form


def use_dense_epilogue(dtype):
    """Whether a product of `dtype` takes the matmul form and this op: bfloat16, the "matmul" form chosen, no GPU to
    run on, and the op mode allows the compiled op (in "auto" mode a library that fails to load gives one warning
    and False: the inner product)."""
    return dtype == tf.bfloat16 and bf16_product_form() == "matmul" and dispatch.use_cpu_op(
        FAMILY, fallback="the inner-product form (TFMODELS_BF16_PRODUCT=inner_product), the same numbers but for "
                         "one bfloat16 rounding")


def use_exact_gelu_epilogue(dtype):
    """Whether core.layers.apply_dense_exact_gelu runs this op: float32 (bfloat16 follows the product form), no GPU
    to run on, and the op mode allows the compiled op (in "auto" mode a library that fails to load gives one
    warning and False)."""
    return dtype == tf.float32 and dispatch.use_cpu_op(
        FAMILY, fallback="MatMul + BiasAdd, then TF's exact GELU in four element-wise passes (the same numbers but "
                         "for the GELU's last bits)")


def epilogue_twin(x, bias, residual, activation):
    """activation(x + bias) (+ residual) in float32, rounded once to x's dtype: what the op computes."""
    outputs = tf.cast(x, tf.float32) + tf.cast(bias, tf.float32)
    if activation == "gelu":
        outputs = tf.nn.gelu(outputs, approximate=False)
    if residual is not None:
        outputs = outputs + tf.cast(residual, tf.float32)
    return tf.cast(outputs, x.dtype)


def dense_epilogue(x, bias, residual, activation):
    """The op on `x` ([..., n] float32 or bfloat16), `bias` ([n]) and `residual` (None or shaped like x);
    `activation` is one of ACTIVATIONS. Differentiable: the gradient is the twin's."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"the dense epilogue applies one of {ACTIVATIONS}, got {activation!r}")
    module = dispatch.op_module(FAMILY)
    residuals = [] if residual is None else [residual]

    def compiled(x, bias, *residuals):
        return module.tf_models_dense_epilogue(x, bias, list(residuals), activation=activation)

    def twin(x, bias, *residuals):
        return epilogue_twin(x, bias, residuals[0] if residuals else None, activation)

    return dispatch.with_twin_gradient(compiled, twin, x, tf.cast(bias, x.dtype), *residuals)
