// A CPU emulation of the part of CUDA that custom_ops' kernels and their harnesses use: tests only, never
// shipped. tests/ops/cuda_harness.py (`--emulate`) compiles a family's harness.cu with g++ against this header
// (it stands in for the toolkit's cuda_runtime.h, with __CUDACC__ defined) after rewriting each launch
// `kernel<<<grid, block, shared, stream>>>(args)` into `cuda_emulation::Launch(...)`.
//
// Why: no GPU has been lent to this project yet, so no CUDA kernel had ever executed. Here each kernel runs on
// the CPU as CUDA defines it: every thread of a block is a fiber with its own stack and built-ins
// (threadIdx, blockIdx, blockDim, gridDim), the blocks run one after another, and the threads of a block switch
// only at __syncthreads, __syncwarp and warp shuffles, which wait for their whole block or warp. That executes the
// kernels' indexing, launch shapes, barriers, shuffles and atomics against the CPU kernels. It is no substitute
// for a GPU: no memory model, no warp lockstep, float rounding of the host compiler, no speed.
//
// What it checks beyond the values:
// - a barrier that not every thread of its block (or warp) reaches, and a shuffle whose mask is not the warp's
//   lanes, stop the launch with an error (cudaErrorLaunchFailure from cudaGetLastError / cudaDeviceSynchronize)
//   and a message on stderr naming the kernel's block and thread: where CUDA's behaviour is undefined;
// - `cuda_emulation::schedule` (0: index order, 1: reverse; the harness's cuda_emulation_set_schedule): the
//   order in which threads run between barriers. A kernel that reads what another thread writes without a
//   barrier between them gives different results in the two orders, and so do sums whose order of atomic
//   additions matters;
// - "device" memory is placed against an inaccessible page, so that a read or write past the end of an allocation
//   faults at once; a handler then names the launch, block and thread, and exits the process with status 86.
//   New allocations and dynamic shared memory (before each block) are filled with 0xFF bytes (NaN floats, -1
//   integers), so that reading them before writing shows;
// - the build adds UBSan (-fsanitize=undefined, no recovery): an index past a __shared__ array (static arrays here,
//   so their bounds are known), signed overflow or a misaligned or null pointer ends the process with its report.
#ifndef TFMODELS_TESTS_CUDA_EMULATION_CUDA_RUNTIME_H_
#define TFMODELS_TESTS_CUDA_EMULATION_CUDA_RUNTIME_H_

#include <signal.h>
#include <sys/mman.h>
#include <setjmp.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// --------------------------------------------------------------------------------------------------------------
// The runtime API the harnesses call.

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;
constexpr cudaError_t cudaErrorMemoryAllocation = 2;
constexpr cudaError_t cudaErrorInvalidConfiguration = 9;
constexpr cudaError_t cudaErrorLaunchFailure = 719;
using cudaStream_t = struct EmulatedStream*;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one after another, so one static array per kernel serves every block, as a block's shared memory.
#define __shared__ static

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace cuda_emulation {

// Allocations: [page-aligned start ... data ... end of the last readable page][PROT_NONE page].
struct Allocation {
  char* mapping;
  size_t mapped_bytes;
};

inline std::map<uintptr_t, Allocation>& Allocations() {
  static std::map<uintptr_t, Allocation> allocations;
  return allocations;
}

inline cudaError_t last_error = cudaSuccess;
inline int schedule = 0;          // 0: threads in index order between barriers; 1: in reverse order
inline long long launches = 0;    // kernels launched (for the tests: the emulation did run something)
inline const char* running_kernel = "";

inline void InstallFaultHandler();

inline cudaError_t Allocate(void** pointer, size_t bytes) {
  InstallFaultHandler();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t data_pages = (bytes + page - 1) / page;
  const size_t mapped = (data_pages + 1) * page;
  void* mapping = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* guard = static_cast<char*>(mapping) + data_pages * page;
  mprotect(guard, page, PROT_NONE);
  // Up against the guard page. Sizes are whole elements, so the start keeps the elements' alignment.
  char* data = guard - bytes;
  std::memset(data, 0xFF, bytes);  // uninitialised device memory is not zeros
  Allocations()[reinterpret_cast<uintptr_t>(data)] = Allocation{static_cast<char*>(mapping), mapped};
  *pointer = data;
  return cudaSuccess;
}

}  // namespace cuda_emulation

template <typename T>
cudaError_t cudaMalloc(T** pointer, size_t bytes) {
  return cuda_emulation::Allocate(reinterpret_cast<void**>(pointer), bytes);
}

inline cudaError_t cudaFree(void* pointer) {
  if (pointer == nullptr) return cudaSuccess;
  auto& allocations = cuda_emulation::Allocations();
  auto found = allocations.find(reinterpret_cast<uintptr_t>(pointer));
  if (found == allocations.end()) return cudaErrorInvalidValue;
  munmap(found->second.mapping, found->second.mapped_bytes);
  allocations.erase(found);
  return cudaSuccess;
}

inline cudaError_t cudaMemcpy(void* destination, const void* source, size_t bytes, cudaMemcpyKind) {
  if (bytes > 0) std::memcpy(destination, source, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* destination, int value, size_t bytes, cudaStream_t = nullptr) {
  if (bytes > 0) std::memset(destination, value, bytes);
  return cudaSuccess;
}

// Launches run to completion before they return: a kernel's error is the launch's.
inline cudaError_t cudaGetLastError() {
  const cudaError_t error = cuda_emulation::last_error;
  cuda_emulation::last_error = cudaSuccess;
  return error;
}

inline cudaError_t cudaDeviceSynchronize() { return cudaGetLastError(); }

inline cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

// --------------------------------------------------------------------------------------------------------------
// The scheduler: one fiber per thread of a block, made once per launch and reused by every block.

namespace cuda_emulation {

constexpr int kWarpSize = 32;
constexpr size_t kStackBytes = 64 * 1024;

enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

// A fiber starts on its own stack through makecontext/setcontext, once per launch; after that the switches are
// _setjmp/_longjmp, which leave the signal mask alone (swapcontext makes a system call at every switch, and
// the harnesses' cases take millions of them).
struct Fiber {
  ucontext_t start;
  jmp_buf resume;
  bool started = false;
  dim3 index;
  State state = State::kRunnable;
};

struct Grid {
  std::vector<Fiber> fibers;
  std::vector<char> stacks;
  jmp_buf scheduler;
  int current = 0;
  bool failed = false;
  std::vector<uint64_t> lanes;  // the warp shuffles' exchange, one 8-byte slot per thread
  const void* body = nullptr;
  void (*run_body)(const void*) = nullptr;
};

inline Grid* grid = nullptr;
inline std::vector<unsigned char> dynamic_shared;

inline int ThreadCount() { return static_cast<int>(grid->fibers.size()); }
inline int LinearThread() { return grid->current; }

inline void Fail(const char* what) {
  if (!grid->failed) {
    std::fprintf(stderr, "cuda_emulation: %s in %s, block (%u, %u, %u), thread (%u, %u, %u)\n", what,
                 running_kernel, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  }
  grid->failed = true;
}

// Back to the scheduler, in `state`, until it resumes this thread.
inline void Yield(State state) {
  Fiber& self = grid->fibers[grid->current];
  self.state = state;
  if (!_setjmp(self.resume)) _longjmp(grid->scheduler, 1);
}

// A fiber runs the kernel once per block: the scheduler resumes it (kRunnable) for the next one.
[[noreturn]] inline void FiberEntry() {
  for (;;) {
    grid->run_body(grid->body);
    Yield(State::kDone);
  }
}

inline void Resume(int t) {
  Fiber& f = grid->fibers[t];
  grid->current = t;
  threadIdx = f.index;
  if (_setjmp(grid->scheduler)) return;  // the thread yielded
  if (f.started) _longjmp(f.resume, 1);
  f.started = true;
  setcontext(&f.start);
}

// Opens the barriers whose whole group waits at them; false when none can open (a barrier that some thread of its
// group will never reach).
inline bool OpenBarriers() {
  std::vector<Fiber>& fibers = grid->fibers;
  const int count = static_cast<int>(fibers.size());
  bool opened = false;
  for (int first = 0; first < count; first += kWarpSize) {
    const int last = std::min(count, first + kWarpSize);
    int waiting = 0;
    for (int t = first; t < last; ++t) waiting += fibers[t].state == State::kAtWarpBarrier;
    if (waiting == last - first) {
      for (int t = first; t < last; ++t) fibers[t].state = State::kRunnable;
      opened = true;
    }
  }
  if (opened) return true;
  int at_block = 0;
  for (const Fiber& f : fibers) at_block += f.state == State::kAtBlockBarrier;
  if (at_block == count) {
    for (Fiber& f : fibers) f.state = State::kRunnable;
    return true;
  }
  return false;
}

inline void RunBlock() {
  std::vector<Fiber>& fibers = grid->fibers;
  const int count = static_cast<int>(fibers.size());
  for (Fiber& f : fibers) f.state = State::kRunnable;
  int done = 0;
  while (done < count && !grid->failed) {
    for (int step = 0; step < count && !grid->failed; ++step) {
      const int t = schedule == 0 ? step : count - 1 - step;
      if (fibers[t].state != State::kRunnable) continue;
      Resume(t);
      if (fibers[t].state == State::kDone) ++done;
    }
    if (done < count && !grid->failed && !OpenBarriers()) {
      int at_block = 0, at_warp = 0;
      for (const Fiber& f : fibers) {
        at_block += f.state == State::kAtBlockBarrier;
        at_warp += f.state == State::kAtWarpBarrier;
      }
      std::fprintf(stderr,
                   "cuda_emulation: a barrier that not every thread reaches in %s, block (%u, %u, %u): %d of %d "
                   "threads wait at __syncthreads, %d at a warp barrier, %d exited\n",
                   running_kernel, blockIdx.x, blockIdx.y, blockIdx.z, at_block, count, at_warp, done);
      grid->failed = true;
    }
  }
}

template <typename Body>
cudaError_t RunGrid(dim3 blocks, dim3 threads, size_t shared_bytes, const Body& body) {
  const long long per_block = static_cast<long long>(threads.x) * threads.y * threads.z;
  if (per_block <= 0 || per_block > 1024 || threads.z > 64 || blocks.x == 0 || blocks.y == 0 || blocks.z == 0 ||
      blocks.y > 65535 || blocks.z > 65535 || shared_bytes > 48 * 1024) {
    std::fprintf(stderr, "cuda_emulation: invalid launch of %s: grid (%u, %u, %u), block (%u, %u, %u), %zu "
                 "bytes of dynamic shared memory\n", running_kernel, blocks.x, blocks.y, blocks.z, threads.x,
                 threads.y, threads.z, shared_bytes);
    return cudaErrorInvalidConfiguration;
  }
  Grid state;
  state.fibers.resize(per_block);
  state.stacks.resize(per_block * kStackBytes);
  state.lanes.resize(per_block);
  state.body = &body;
  state.run_body = [](const void* b) { (*static_cast<const Body*>(b))(); };
  for (unsigned z = 0, t = 0; z < threads.z; ++z)
    for (unsigned y = 0; y < threads.y; ++y)
      for (unsigned x = 0; x < threads.x; ++x, ++t) {
        Fiber& f = state.fibers[t];
        f.index = dim3(x, y, z);
        getcontext(&f.start);
        f.start.uc_stack.ss_sp = state.stacks.data() + t * kStackBytes;
        f.start.uc_stack.ss_size = kStackBytes;
        f.start.uc_link = nullptr;  // a fiber never returns (FiberEntry)
        makecontext(&f.start, reinterpret_cast<void (*)()>(FiberEntry), 0);
      }
  grid = &state;
  gridDim = blocks;
  blockDim = threads;
  dynamic_shared.resize(shared_bytes);
  for (unsigned z = 0; z < blocks.z && !state.failed; ++z)
    for (unsigned y = 0; y < blocks.y && !state.failed; ++y)
      for (unsigned x = 0; x < blocks.x && !state.failed; ++x) {
        blockIdx = dim3(x, y, z);
        // NaN floats: shared memory read before it is written shows.
        if (shared_bytes > 0) std::memset(dynamic_shared.data(), 0xFF, shared_bytes);
        RunBlock();
      }
  grid = nullptr;
  ++launches;
  return state.failed ? cudaErrorLaunchFailure : cudaSuccess;
}

struct LaunchConfig {
  dim3 grid, threads;
  size_t shared_bytes;
};

inline LaunchConfig Configure(dim3 grid, dim3 threads, size_t shared_bytes = 0, cudaStream_t = nullptr) {
  return LaunchConfig{grid, threads, shared_bytes};
}

// kernel<<<config>>>(args...): the arguments are converted to the kernel's parameter types and copied, as CUDA
// passes them, then every block runs before this returns.
template <typename... Params, typename... Args>
void Launch(const char* name, const LaunchConfig& config, void (*kernel)(Params...), Args&&... args) {
  std::tuple<std::decay_t<Params>...> copies(static_cast<Params>(std::forward<Args>(args))...);
  running_kernel = name;
  const cudaError_t error = RunGrid(config.grid, config.threads, config.shared_bytes,
                                    [&] { std::apply(kernel, copies); });
  if (error != cudaSuccess && last_error == cudaSuccess) last_error = error;
}

template <typename T>
T* DynamicShared() {
  return reinterpret_cast<T*>(dynamic_shared.data());
}

inline void FaultHandler(int signal_number, siginfo_t* info, void*) {
  char message[512];
  const int length = std::snprintf(
      message, sizeof(message),
      "cuda_emulation: invalid %s access at %p in %s, block (%u, %u, %u), thread (%u, %u, %u): past the end of "
      "a device allocation, or not device memory\n",
      signal_number == SIGSEGV ? "memory" : "bus", info->si_addr, grid != nullptr ? running_kernel : "host code",
      blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
  if (length > 0) (void)!write(2, message, static_cast<size_t>(std::min<int>(length, sizeof(message) - 1)));
  _exit(86);
}

inline void InstallFaultHandler() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  // The fault may come from a fiber's 64 KB stack: the handler runs on a stack of its own.
  static std::vector<char> signal_stack(64 * 1024);
  stack_t alternate{};
  alternate.ss_sp = signal_stack.data();
  alternate.ss_size = signal_stack.size();
  sigaltstack(&alternate, nullptr);
  struct sigaction action {};
  action.sa_sigaction = FaultHandler;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &action, nullptr);
  sigaction(SIGBUS, &action, nullptr);
}

}  // namespace cuda_emulation

// --------------------------------------------------------------------------------------------------------------
// Device built-ins.

inline void __syncthreads() { cuda_emulation::Yield(cuda_emulation::State::kAtBlockBarrier); }

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  using namespace cuda_emulation;
  const int first = LinearThread() / kWarpSize * kWarpSize;
  const int lanes = std::min(kWarpSize, ThreadCount() - first);
  const unsigned warp_mask = lanes == kWarpSize ? 0xffffffffu : (1u << lanes) - 1;
  if (mask != warp_mask) Fail("__syncwarp with a mask other than the warp's lanes (not emulated)");
  Yield(State::kAtWarpBarrier);
}

// Every lane writes its value, the warp meets, each reads its partner's, the warp meets again (so that no lane
// overwrites a value before its partner has read it in a next shuffle).
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = cuda_emulation::kWarpSize) {
  using namespace cuda_emulation;
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value, "shuffle of 8 bytes at most");
  if (width != kWarpSize) Fail("__shfl_xor_sync with a width other than 32 (not emulated)");
  const int self = LinearThread(), first = self / kWarpSize * kWarpSize;
  std::memcpy(&grid->lanes[self], &value, sizeof(T));
  __syncwarp(mask);
  const int partner = first + ((self - first) ^ lane_mask);
  T result = value;
  if (partner < ThreadCount()) {
    std::memcpy(&result, &grid->lanes[partner], sizeof(T));
  } else {
    Fail("__shfl_xor_sync from a lane past the block's last thread");
  }
  __syncwarp(mask);
  return result;
}

// The threads of a block take turns, so a read-modify-write is atomic.
template <typename T>
T atomicAdd(T* address, T value) {
  const T old = *address;
  *address = old + value;
  return old;
}

// Round-to-nearest arithmetic that the compiler never contracts (the build uses -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }

#endif  // TFMODELS_TESTS_CUDA_EMULATION_CUDA_RUNTIME_H_
