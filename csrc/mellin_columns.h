// Column kernels on CUDA tensors, declared for mellin_ops.cpp and defined in mellin_cuda.cu.
// Only compiled when torch has CUDA (SPEECHBED_MELLIN_WITH_CUDA).
#pragma once

#include <ATen/ATen.h>

#include "mellin_index.h"

namespace speechbed_mellin {

#ifdef SPEECHBED_MELLIN_WITH_CUDA
// columns (batch, C*Kx*Ky, X_out*Y_out) from a contiguous CUDA input slice.
void spec2col_cuda(const at::Tensor& input, at::Tensor& columns, const Geometry& g);
// grad_input (a contiguous slice) from grad_columns: the adjoint of spec2col_cuda.
void col2spec_cuda(const at::Tensor& grad_columns, at::Tensor& grad_input, const Geometry& g);
#endif

}  // namespace speechbed_mellin
