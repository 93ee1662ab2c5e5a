// The TF side of parallel.h: a ParallelFor over TensorFlow's intra-op CPU thread pool.
#ifndef TFMODELS_COMMON_TF_PARALLEL_H_
#define TFMODELS_COMMON_TF_PARALLEL_H_

#include <cstdint>
#include <functional>

#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tfmodels {

struct TfParallelFor {
  explicit TfParallelFor(tensorflow::OpKernelContext* context)
      : workers(*context->device()->tensorflow_cpu_worker_threads()) {}
  template <typename Fn>
  void operator()(int64_t total, int64_t cost_per_unit, Fn&& fn) const {
    if (total <= 0) return;
    std::function<void(int64_t, int64_t)> work = fn;
    tensorflow::Shard(workers.num_threads, workers.workers, total, cost_per_unit, work);
  }
  const tensorflow::DeviceBase::CpuWorkerThreads& workers;
};

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_TF_PARALLEL_H_
