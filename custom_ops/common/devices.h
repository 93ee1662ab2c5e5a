// Device tags of the ops' OpKernel<Device> templates (TF-free). Each op family declares one functor per device
// (<family>_ops.h): the CPU one is defined in <family>_ops.cc, the GPU one in <family>_ops_gpu.cu.cc, built and
// registered only under GOOGLE_CUDA. The OpKernel validates its inputs once for both devices.
#ifndef TFMODELS_COMMON_DEVICES_H_
#define TFMODELS_COMMON_DEVICES_H_

#include <type_traits>

namespace tfmodels {

struct CpuDevice {};
struct GpuDevice {};

template <typename Device>
constexpr bool kOnGpu = std::is_same<Device, GpuDevice>::value;

}  // namespace tfmodels

#endif  // TFMODELS_COMMON_DEVICES_H_
