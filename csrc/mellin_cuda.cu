// CUDA kernels of the Mellin ops: the Mellin rows tensor and its adjoint, one thread per entry.
// Compiled by speechbed.mellin.extension only where torch has CUDA; called from mellin_ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "mellin_index.h"
#include "mellin_rows.h"

namespace speechbed_mellin {

namespace {

constexpr int kThreads = 256;

int grid_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

// One thread per entry of R (grid-stride); the body is mellin_rows_entry (mellin_index.h).
template <typename scalar_t>
__global__ void mellin_rows_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ rows, Geometry g,
                                   int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    rows[index] = mellin_rows_entry(input, g, index);
  }
}

// One thread per input entry; the body is mellin_rows_adjoint_entry (mellin_index.h).
template <typename scalar_t>
__global__ void mellin_rows_adjoint_kernel(const scalar_t* __restrict__ grad_rows,
                                           scalar_t* __restrict__ grad_input, Geometry g, int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    grad_input[index] = mellin_rows_adjoint_entry(grad_rows, g, index);
  }
}

}  // namespace

void mellin_rows_cuda(const at::Tensor& input, at::Tensor& rows, const Geometry& g) {
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t elements = rows.numel();
  if (elements == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mellin_rows_cuda", [&] {
    mellin_rows_kernel<scalar_t><<<grid_for(elements), kThreads, 0, stream>>>(
        input.const_data_ptr<scalar_t>(), rows.mutable_data_ptr<scalar_t>(), g, elements);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void mellin_rows_adjoint_cuda(const at::Tensor& grad_rows, at::Tensor& grad_input, const Geometry& g) {
  const c10::cuda::CUDAGuard guard(grad_rows.device());
  const int64_t elements = grad_input.numel();
  if (elements == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_rows.scalar_type(), "mellin_rows_adjoint_cuda", [&] {
    mellin_rows_adjoint_kernel<scalar_t><<<grid_for(elements), kThreads, 0, stream>>>(
        grad_rows.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), g, elements);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace speechbed_mellin
