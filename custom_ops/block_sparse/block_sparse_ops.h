// The per-device functor of the block-sparse primitives (semantics: block_sparse_kernels.h), called by the
// OpKernels of block_sparse_ops.cc on validated inputs. Each function returns false after failing the op.
// BlockSparseFunctor<CpuDevice, T> is in block_sparse_ops.cc, BlockSparseFunctor<GpuDevice, T> in
// block_sparse_ops_gpu.cu.cc.
#ifndef TFMODELS_BLOCK_SPARSE_OPS_H_
#define TFMODELS_BLOCK_SPARSE_OPS_H_

#include <cstdint>

#include "common/devices.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace block_sparse {

template <typename Device, typename T>
struct BlockSparseFunctor;

#if GOOGLE_CUDA
template <typename T>
struct BlockSparseFunctor<GpuDevice, T> {
  static bool Sddmm(tensorflow::OpKernelContext* ctx, const T* a, const T* b, const int32_t* indices, T* out,
                    int64_t batch, int64_t rows, int64_t cols, int64_t dim, int64_t slots);
  static bool Spmm(tensorflow::OpKernelContext* ctx, const T* blocks, const int32_t* indices, const T* dense, T* out,
                   int64_t batch, int64_t rows, int64_t cols, int64_t dim, int64_t slots, bool transpose);
  static bool RowReduce(tensorflow::OpKernelContext* ctx, const T* blocks, const int32_t* indices, T* out,
                        int64_t batch, int64_t rows, int64_t cols, int64_t slots, bool is_max);
};
#endif  // GOOGLE_CUDA

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // TFMODELS_BLOCK_SPARSE_OPS_H_
