// TF-free parallel-for used by the CPU kernels of every op family.
//
// Kernel headers are templated on a `ParallelFor` callable: parallel_for(total, cost_per_unit, fn) must call
// fn(begin, end) over disjoint ranges covering [0, total). The TF wrappers pass TF's CPU thread pool
// (tf_parallel.h); the TF-free test harness passes SerialFor or ThreadFor.
#ifndef TFMODELS_COMMON_PARALLEL_H_
#define TFMODELS_COMMON_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace tfmodels {

struct SerialFor {
  template <typename Fn>
  void operator()(int64_t total, int64_t /*cost_per_unit*/, Fn&& fn) const {
    if (total > 0) fn(0, total);
  }
};

// std::thread based, for the harness and for tools outside TF.
struct ThreadFor {
  int num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  template <typename Fn>
  void operator()(int64_t total, int64_t /*cost_per_unit*/, Fn&& fn) const {
    if (total <= 0) return;
    const int64_t workers = std::min<int64_t>(num_threads, total);
    const int64_t chunk = (total + workers - 1) / workers;
    std::vector<std::thread> threads;
    for (int64_t w = 0; w < workers; ++w) {
      const int64_t begin = w * chunk, end = std::min(total, begin + chunk);
      if (begin < end) threads.emplace_back([&fn, begin, end] { fn(begin, end); });
    }
    for (auto& t : threads) t.join();
  }
};

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_PARALLEL_H_
