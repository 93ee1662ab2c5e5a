// The GPU functor of the block-sparse primitives (the OpKernels, with their input validation, are in
// block_sparse_ops.cc): the CUDA kernels of block_sparse_kernels.cuh on TF's stream. The kernels trust the
// indices: on the GPU their range is checked by the Python wrapper (tfmodels/ops/block_sparse.py) before the
// launch, since they live in device memory.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include "block_sparse/block_sparse_kernels.cuh"
#include "block_sparse/block_sparse_ops.h"
#include "common/tf_gpu.h"
#include "tensorflow/core/framework/op_kernel.h"

namespace tfmodels {
namespace block_sparse {

using ::tensorflow::OpKernelContext;

template <typename T>
bool BlockSparseFunctor<GpuDevice, T>::Sddmm(OpKernelContext* ctx, const T* a, const T* b, const int32_t* indices,
                                             T* out, int64_t batch, int64_t rows, int64_t cols, int64_t dim,
                                             int64_t slots) {
  return CheckLaunch(ctx, cuda::LaunchSddmm<T>(StreamOf(ctx), a, b, indices, out, batch, rows, cols, dim, slots),
                     "BlockSparseSddmm");
}

template <typename T>
bool BlockSparseFunctor<GpuDevice, T>::Spmm(OpKernelContext* ctx, const T* blocks, const int32_t* indices,
                                            const T* dense, T* out, int64_t batch, int64_t rows, int64_t cols,
                                            int64_t dim, int64_t slots, bool transpose) {
  return CheckLaunch(ctx,
                     cuda::LaunchSpmm<T>(StreamOf(ctx), blocks, indices, dense, out, batch, rows, cols, dim, slots,
                                         transpose),
                     "BlockSparseSpmm");
}

template <typename T>
bool BlockSparseFunctor<GpuDevice, T>::RowReduce(OpKernelContext* ctx, const T* blocks, const int32_t* indices,
                                                 T* out, int64_t batch, int64_t rows, int64_t cols, int64_t slots,
                                                 bool is_max) {
  return CheckLaunch(ctx,
                     cuda::LaunchRowReduce<T>(StreamOf(ctx), blocks, indices, out, batch, rows, cols, slots, is_max),
                     is_max ? "BlockSparseRowMax" : "BlockSparseRowSum");
}

template struct BlockSparseFunctor<GpuDevice, float>;
template struct BlockSparseFunctor<GpuDevice, double>;

}  // namespace block_sparse
}  // namespace tfmodels

#endif  // GOOGLE_CUDA
