// TF side of the LSH ops shared by the OpKernels (lsh_ops.cc) and the GPU functor (lsh_ops_gpu.cu.cc): the shape
// validation and the per-device functors. Every check fails the op with InvalidArgument naming the input;
// nothing here touches tensor contents, so it is valid for device memory too.
#ifndef TFMODELS_LSH_LSH_OPS_H_
#define TFMODELS_LSH_LSH_OPS_H_

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/devices.h"
#include "common/tf_checks.h"
#include "lsh/lsh_kernels.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace lsh {

constexpr int64_t kMaxCodeLen = 30;
constexpr int64_t kMaxInt32Elements = int64_t{1} << 31;

// Inputs 0..2 of FastHash: vectors [B,N,D], mask [B,N], projections [B,3,num_part,P].
inline bool CheckFastHashInputs(tensorflow::OpKernelContext* ctx, int64_t num_hash, int64_t code_len,
                                FastHashArgs* args) {
  const tensorflow::Tensor& vectors = ctx->input(0);
  const tensorflow::Tensor& mask = ctx->input(1);
  const tensorflow::Tensor& projections = ctx->input(2);
  if (!CheckRank(ctx, vectors, 3, "vectors") || !CheckRank(ctx, mask, 2, "mask") ||
      !CheckRank(ctx, projections, 4, "projections")) {
    return false;
  }
  const int64_t B = vectors.dim_size(0), N = vectors.dim_size(1), D = vectors.dim_size(2);
  if (!CheckDim(ctx, mask, 0, B, "mask", "batch of vectors") ||
      !CheckDim(ctx, mask, 1, N, "mask", "number of vectors") ||
      !CheckDim(ctx, projections, 0, B, "projections", "batch of vectors") ||
      !CheckDim(ctx, projections, 1, 3, "projections", "three random sign diagonals")) {
    return false;
  }
  const int64_t P = projections.dim_size(3);
  if (!CheckThat(ctx, code_len >= 1 && code_len <= kMaxCodeLen,
                 absl::StrCat("hash_code_len must be in [1, ", kMaxCodeLen, "], got ", code_len)) ||
      !CheckThat(ctx, num_hash >= 1, absl::StrCat("num_hash must be positive, got ", num_hash)) ||
      !CheckThat(ctx, IsPowerOfTwo(P) && P >= D && P >= code_len,
                 absl::StrCat("projections dimension 3 (padded dimension) must be a power of two >= the vector "
                              "dimension (", D, ") and >= hash_code_len (", code_len, "), got ", P))) {
    return false;
  }
  const int64_t num_part = NumParts(num_hash, P, code_len);
  if (!CheckDim(ctx, projections, 2, num_part, "projections",
                "parts: ceil(num_hash / (padded_dim / hash_code_len))") ||
      !CheckThat(ctx, B * N * num_hash < kMaxInt32Elements, "fast_hash output is too large")) {
    return false;
  }
  *args = FastHashArgs{nullptr, nullptr, nullptr, nullptr, B, N, D, P, num_part, num_hash, code_len};
  return true;
}

// Inputs of LshCumulation (weighted = false: query_mask, query_code, key_mask, key_code, value) or
// LshWeightedCumulation (weighted = true: query_mask, query_code, query_weight, key_mask, key_code, key_weight,
// value).
inline bool CheckCumulationInputs(tensorflow::OpKernelContext* ctx, bool weighted, int64_t capacity,
                                  CumulationArgs* args) {
  const int i_qmask = 0, i_qcode = 1, i_qweight = 2;
  const int i_kmask = weighted ? 3 : 2, i_kcode = weighted ? 4 : 3, i_kweight = 5, i_value = weighted ? 6 : 4;
  const tensorflow::Tensor& qmask = ctx->input(i_qmask);
  const tensorflow::Tensor& qcode = ctx->input(i_qcode);
  const tensorflow::Tensor& kmask = ctx->input(i_kmask);
  const tensorflow::Tensor& kcode = ctx->input(i_kcode);
  const tensorflow::Tensor& value = ctx->input(i_value);
  if (!CheckRank(ctx, qmask, 2, "query_mask") || !CheckRank(ctx, qcode, 3, "query_code") ||
      !CheckRank(ctx, kmask, 2, "key_mask") || !CheckRank(ctx, kcode, 3, "key_code") ||
      !CheckRank(ctx, value, 3, "value")) {
    return false;
  }
  const int64_t B = qcode.dim_size(0), Nq = qcode.dim_size(1), H = qcode.dim_size(2);
  const int64_t Nk = kcode.dim_size(1), D = value.dim_size(2);
  if (!CheckDim(ctx, qmask, 0, B, "query_mask", "batch of query_code") ||
      !CheckDim(ctx, qmask, 1, Nq, "query_mask", "queries in query_code") ||
      !CheckDim(ctx, kcode, 0, B, "key_code", "batch of query_code") ||
      !CheckDim(ctx, kcode, 2, H, "key_code", "hashes in query_code") ||
      !CheckDim(ctx, kmask, 0, B, "key_mask", "batch of query_code") ||
      !CheckDim(ctx, kmask, 1, Nk, "key_mask", "keys in key_code") ||
      !CheckDim(ctx, value, 0, B, "value", "batch of query_code") ||
      !CheckDim(ctx, value, 1, Nk, "value", "keys in key_code")) {
    return false;
  }
  if (!CheckThat(ctx, capacity >= 1 && capacity <= (int64_t{1} << kMaxCodeLen),
                 absl::StrCat("hashtable_capacity must be in [1, 2^", kMaxCodeLen, "], got ", capacity)) ||
      !CheckThat(ctx, H >= 1, "query_code and key_code need at least one hash (dimension 2)") ||
      !CheckThat(ctx, B * Nk * H < kMaxInt32Elements && B * Nq * H < kMaxInt32Elements &&
                      B * H * (capacity + 1) < kMaxInt32Elements,
                 "lsh cumulation inputs are too large")) {
    return false;
  }
  int64_t W = 0;
  if (weighted) {
    const tensorflow::Tensor& qweight = ctx->input(i_qweight);
    const tensorflow::Tensor& kweight = ctx->input(i_kweight);
    if (!CheckRank(ctx, qweight, 3, "query_weight") || !CheckRank(ctx, kweight, 3, "key_weight")) return false;
    W = qweight.dim_size(2);
    if (!CheckDim(ctx, qweight, 0, B, "query_weight", "batch of query_code") ||
        !CheckDim(ctx, qweight, 1, Nq, "query_weight", "queries in query_code") ||
        !CheckDim(ctx, kweight, 0, B, "key_weight", "batch of query_code") ||
        !CheckDim(ctx, kweight, 1, Nk, "key_weight", "keys in key_code") ||
        !CheckDim(ctx, kweight, 2, W, "key_weight", "weight dimension of query_weight")) {
      return false;
    }
  }
  *args = CumulationArgs{nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                         B, Nq, Nk, H, W, D, capacity};
  return true;
}

// The computations on one device, on validated arguments whose pointers are set. Each returns false after
// failing the op. LshFunctor<CpuDevice> is in lsh_ops.cc, LshFunctor<GpuDevice> in lsh_ops_gpu.cu.cc.
template <typename Device>
struct LshFunctor;

#if GOOGLE_CUDA
template <>
struct LshFunctor<GpuDevice> {
  static bool FastHash(tensorflow::OpKernelContext* ctx, const FastHashArgs& args);
  static bool Cumulation(tensorflow::OpKernelContext* ctx, const CumulationArgs& args);
  static bool WeightedCumulation(tensorflow::OpKernelContext* ctx, const CumulationArgs& args);
};
#endif  // GOOGLE_CUDA

}  // namespace lsh
}  // namespace tfmodels

#endif  // TFMODELS_LSH_LSH_OPS_H_
