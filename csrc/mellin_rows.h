// Mellin-rows kernels on CUDA tensors, declared for mellin_ops.cpp and defined in mellin_cuda.cu.
// Only compiled when torch has CUDA (SPEECHBED_MELLIN_WITH_CUDA).
#pragma once

#include <ATen/ATen.h>

#include "mellin_index.h"

namespace speechbed_mellin {

#ifdef SPEECHBED_MELLIN_WITH_CUDA
// rows (batch * out_x, kernel_x * channels, padded_y) from a contiguous CUDA input.
void mellin_rows_cuda(const at::Tensor& input, at::Tensor& rows, const Geometry& g);
// grad_input (contiguous) from grad_rows: the adjoint of mellin_rows_cuda.
void mellin_rows_adjoint_cuda(const at::Tensor& grad_rows, at::Tensor& grad_input, const Geometry& g);
#endif

}  // namespace speechbed_mellin
