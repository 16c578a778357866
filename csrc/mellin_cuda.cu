// CUDA kernels of the Mellin ops: columns from the input, and their adjoint, one thread per element.
// Compiled by speechbed.mellin.extension only where torch has CUDA; called from mellin_ops.cpp.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include "mellin_columns.h"
#include "mellin_index.h"

namespace speechbed_mellin {

namespace {

constexpr int kThreads = 256;

int64_t blocks_for(int64_t elements) { return (elements + kThreads - 1) / kThreads; }

// One thread per columns entry; the body is column_entry (mellin_index.h).
template <typename scalar_t>
__global__ void spec2col_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ columns, Geometry g,
                                int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    columns[index] = column_entry(input, g, index);
  }
}

// One thread per input entry; the body is input_gradient_entry (mellin_index.h).
template <typename scalar_t>
__global__ void col2spec_kernel(const scalar_t* __restrict__ grad_columns, scalar_t* __restrict__ grad_input,
                                Geometry g, int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    grad_input[index] = input_gradient_entry(grad_columns, g, index);
  }
}

int grid_for(int64_t elements) {
  const int64_t limit = 65535;
  const int64_t blocks = blocks_for(elements);
  return static_cast<int>(blocks < limit ? (blocks > 0 ? blocks : 1) : limit);
}

}  // namespace

void spec2col_cuda(const at::Tensor& input, at::Tensor& columns, const Geometry& g) {
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t elements = columns.numel();
  if (elements == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "spec2col_cuda", [&] {
    spec2col_kernel<scalar_t><<<grid_for(elements), kThreads, 0, stream>>>(
        input.const_data_ptr<scalar_t>(), columns.mutable_data_ptr<scalar_t>(), g, elements);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void col2spec_cuda(const at::Tensor& grad_columns, at::Tensor& grad_input, const Geometry& g) {
  const c10::cuda::CUDAGuard guard(grad_columns.device());
  const int64_t elements = grad_input.numel();
  if (elements == 0) return;
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "col2spec_cuda", [&] {
    col2spec_kernel<scalar_t><<<grid_for(elements), kThreads, 0, stream>>>(
        grad_columns.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), g, elements);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace speechbed_mellin
