// TF wrappers of the LSH ops (YOSO): op registrations with shape functions, one OpKernel<Device> per op (input
// validation for both devices) and the CPU functor. The kernels themselves are TF-free (lsh_kernels.h); the GPU
// functor is in lsh_ops_gpu.cu.cc.
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/tf_checks.h"
#include "common/tf_parallel.h"
#include "lsh/lsh_kernels.h"
#include "lsh/lsh_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tfmodels {
namespace lsh {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::DEVICE_GPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

REGISTER_OP("TFModels>LshFastHash")
    .Input("vectors: float")
    .Input("mask: int32")
    .Input("projections: float")
    .Output("codes: int32")
    .Attr("num_hash: int >= 1")
    .Attr("hash_code_len: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle vectors;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &vectors));
      int64_t num_hash;
      TF_RETURN_IF_ERROR(c->GetAttr("num_hash", &num_hash));
      c->set_output(0, c->MakeShape({c->Dim(vectors, 0), c->Dim(vectors, 1), c->MakeDim(num_hash)}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
YOSO's fast hash: random projections by three rounds of random signs and Walsh-Hadamard transforms, the signs of
the result packed into `num_hash` codes of `hash_code_len` bits. `projections` [batch, 3, num_part, P] holds the
random sign diagonals (P: a power of two >= the vector size; vectors are zero-padded to P). Masked vectors get 0.
)doc");

REGISTER_OP("TFModels>LshCumulation")
    .Input("query_mask: int32")
    .Input("query_code: int32")
    .Input("key_mask: int32")
    .Input("key_code: int32")
    .Input("value: float")
    .Output("cumulation: float")
    .Attr("hashtable_capacity: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle query_code, value;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &query_code));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 3, &value));
      c->set_output(0, c->MakeShape({c->Dim(query_code, 0), c->Dim(query_code, 1), c->Dim(value, 2)}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Sum of the values of the keys that share a hash bucket with each query, averaged over the hashes:
out[b, q] = query_mask[b, q] / H * sum_h sum_{k: key_mask[b, k], key_code[b, k, h] == query_code[b, q, h]} value[b, k].
)doc");

REGISTER_OP("TFModels>LshWeightedCumulation")
    .Input("query_mask: int32")
    .Input("query_code: int32")
    .Input("query_weight: float")
    .Input("key_mask: int32")
    .Input("key_code: int32")
    .Input("key_weight: float")
    .Input("value: float")
    .Output("cumulation: float")
    .Attr("hashtable_capacity: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle query_code, value;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 3, &query_code));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(6), 3, &value));
      c->set_output(0, c->MakeShape({c->Dim(query_code, 0), c->Dim(query_code, 1), c->Dim(value, 2)}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
As LshCumulation, with each colliding (query, key) pair weighted by <query_weight[b, q], key_weight[b, k]>.
)doc");

namespace {

// Codes index the hash tables: one out of range would read or write outside them.
bool CheckCodes(OpKernelContext* ctx, const Tensor& codes, int64_t capacity, const char* name) {
  const auto flat = codes.flat<int32_t>();
  for (int64_t i = 0; i < flat.size(); ++i) {
    if (flat(i) < 0 || flat(i) >= capacity) {
      return CheckThat(ctx, false, absl::StrCat(name, " holds ", flat(i), " at flat index ", i,
                                                 ": codes must lie in [0, hashtable_capacity=", capacity, ")"));
    }
  }
  return true;
}

}  // namespace

template <>
struct LshFunctor<CpuDevice> {
  static bool FastHash(OpKernelContext* ctx, const FastHashArgs& args) {
    tfmodels::lsh::FastHash(TfParallelFor(ctx), args);
    return true;
  }
  static bool Cumulation(OpKernelContext* ctx, const CumulationArgs& args) {
    LshCumulation(TfParallelFor(ctx), args);
    return true;
  }
  static bool WeightedCumulation(OpKernelContext* ctx, const CumulationArgs& args) {
    LshWeightedCumulation(TfParallelFor(ctx), args);
    return true;
  }
};

template <typename Device>
class LshFastHashOp : public OpKernel {
 public:
  explicit LshFastHashOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_hash", &num_hash_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hash_code_len", &code_len_));
  }

  void Compute(OpKernelContext* ctx) override {
    FastHashArgs args;
    if (!CheckFastHashInputs(ctx, num_hash_, code_len_, &args)) return;
    if (kOnGpu<Device> &&
        (!CheckThat(ctx, args.padded_dim <= kMaxGpuPaddedDim,
                    absl::StrCat("on the GPU the padded dimension must be <= ", kMaxGpuPaddedDim, ", got ",
                                 args.padded_dim)) ||
         !CheckThat(ctx, args.batch * args.num_vectors * args.num_part < kMaxInt32Elements,
                    "fast_hash: too many vectors for one launch"))) {
      return;
    }
    Tensor* codes = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({args.batch, args.num_vectors, args.num_hash}), &codes));
    args.vectors = ctx->input(0).flat<float>().data();
    args.mask = ctx->input(1).flat<int32_t>().data();
    args.projections = ctx->input(2).flat<float>().data();
    args.codes = codes->flat<int32_t>().data();
    LshFunctor<Device>::FastHash(ctx, args);
  }

 private:
  int64_t num_hash_ = 0, code_len_ = 0;
};

template <typename Device, bool kWeighted>
class LshCumulationOp : public OpKernel {
 public:
  explicit LshCumulationOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("hashtable_capacity", &capacity_));
  }

  void Compute(OpKernelContext* ctx) override {
    CumulationArgs args;
    if (!CheckCumulationInputs(ctx, kWeighted, capacity_, &args)) return;
    const int i_kcode = kWeighted ? 4 : 3, i_value = kWeighted ? 6 : 4, i_kmask = kWeighted ? 3 : 2;
    // Codes are read on the host only: on the GPU, the kernels skip codes outside the tables instead.
    if (!kOnGpu<Device> && (!CheckCodes(ctx, ctx->input(1), capacity_, "query_code") ||
                            !CheckCodes(ctx, ctx->input(i_kcode), capacity_, "key_code"))) {
      return;
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({args.batch, args.num_query, args.value_dim}), &out));
    args.query_mask = ctx->input(0).flat<int32_t>().data();
    args.query_code = ctx->input(1).flat<int32_t>().data();
    args.key_mask = ctx->input(i_kmask).flat<int32_t>().data();
    args.key_code = ctx->input(i_kcode).flat<int32_t>().data();
    args.value = ctx->input(i_value).flat<float>().data();
    args.out = out->flat<float>().data();
    if (kWeighted) {
      args.query_weight = ctx->input(2).flat<float>().data();
      args.key_weight = ctx->input(5).flat<float>().data();
      LshFunctor<Device>::WeightedCumulation(ctx, args);
    } else {
      LshFunctor<Device>::Cumulation(ctx, args);
    }
  }

 private:
  int64_t capacity_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TFModels>LshFastHash").Device(DEVICE_CPU), LshFastHashOp<CpuDevice>);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshCumulation").Device(DEVICE_CPU), LshCumulationOp<CpuDevice, false>);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshWeightedCumulation").Device(DEVICE_CPU), LshCumulationOp<CpuDevice, true>);
#if GOOGLE_CUDA
REGISTER_KERNEL_BUILDER(Name("TFModels>LshFastHash").Device(DEVICE_GPU), LshFastHashOp<GpuDevice>);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshCumulation").Device(DEVICE_GPU), LshCumulationOp<GpuDevice, false>);
REGISTER_KERNEL_BUILDER(Name("TFModels>LshWeightedCumulation").Device(DEVICE_GPU), LshCumulationOp<GpuDevice, true>);
#endif  // GOOGLE_CUDA

}  // namespace lsh
}  // namespace tfmodels
