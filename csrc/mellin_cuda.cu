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

// One thread per columns entry (n, i, a, c, x, y).
template <typename scalar_t>
__global__ void spec2col_kernel(const scalar_t* __restrict__ input, scalar_t* __restrict__ columns, Geometry g,
                                int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t y = index % g.out_y;
    const int64_t x = (index / g.out_y) % g.out_x;
    const int64_t c = (index / g.column_length()) % g.kernel_y;
    const int64_t a = (index / (g.column_length() * g.kernel_y)) % g.kernel_x;
    const int64_t plane = index / (g.column_length() * g.kernel_y * g.kernel_x);  // n * channels + i
    const int64_t source_x = mellin_source(x, a, g.s_x, g.d_x, g.p_x, g.in_x);
    const int64_t source_y = linear_source(y, c, g.s_y, g.d_y, g.p_y, g.in_y);
    columns[index] = (source_x >= 0 && source_y >= 0)
                         ? input[(plane * g.in_x + source_x) * g.in_y + source_y]
                         : scalar_t(0);
  }
}

// One thread per input entry (n, i, j, k): sums the column entries that read it, so no atomics.
template <typename scalar_t>
__global__ void col2spec_kernel(const scalar_t* __restrict__ grad_columns, scalar_t* __restrict__ grad_input,
                                Geometry g, int64_t elements) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < elements;
       index += int64_t(blockDim.x) * gridDim.x) {
    const int64_t k = index % g.in_y;
    const int64_t j = (index / g.in_y) % g.in_x;
    const int64_t plane = index / (g.in_y * g.in_x);
    scalar_t total = scalar_t(0);
    for (int64_t a = 0; a < g.kernel_x; ++a) {
      const int64_t x = mellin_target(j, a, g.s_x, g.d_x, g.p_x, g.out_x);
      if (x < 0) continue;
      for (int64_t c = 0; c < g.kernel_y; ++c) {
        const int64_t y = linear_target(k, c, g.s_y, g.d_y, g.p_y, g.out_y);
        if (y < 0) continue;
        const int64_t row = (plane * g.kernel_x + a) * g.kernel_y + c;
        total += grad_columns[row * g.column_length() + x * g.out_y + y];
      }
    }
    grad_input[index] = total;
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
