// Header-only CPU kernels of the Mellin ops (OpenMP): columns from the input, and their adjoint.
// Included by mellin_ops.cpp; plain C++ on raw contiguous buffers.
#pragma once

#include <cstdint>

#include "mellin_index.h"

namespace speechbed_mellin {

// Below this many element copies a kernel runs on one thread: waking a team costs more.
constexpr int64_t kParallelThreshold = 1 << 15;

// columns[(i, a, c)][(n, x, y)] = input[n][i][mellin_source(x, a)][linear_source(y, c)], 0 off the input.
template <typename scalar_t>
void spec2col_cpu(const scalar_t* input, scalar_t* columns, const Geometry& g) {
  const int64_t tasks = g.batch * g.channels * g.kernel_x * g.kernel_y;
#pragma omp parallel for schedule(static) if (tasks * g.column_length() > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t c = task % g.kernel_y;
    const int64_t a = (task / g.kernel_y) % g.kernel_x;
    const int64_t plane = task / (g.kernel_x * g.kernel_y);  // n * channels + i
    const int64_t n = plane / g.channels;
    const int64_t column_row = ((plane % g.channels) * g.kernel_x + a) * g.kernel_y + c;
    const scalar_t* source_plane = input + plane * g.in_x * g.in_y;
    scalar_t* row = columns + g.block_offset(column_row, n);
    int64_t first, last;
    linear_valid_range(c, g, &first, &last);
    const int64_t offset = g.d_y * c - g.p_y;
    for (int64_t x = 0; x < g.out_x; ++x) {
      scalar_t* out = row + x * g.out_y;
      const int64_t source_x = mellin_source(x, a, g.s_x, g.d_x, g.p_x, g.in_x);
      if (source_x < 0) {
        for (int64_t y = 0; y < g.out_y; ++y) out[y] = scalar_t(0);
        continue;
      }
      const scalar_t* in = source_plane + source_x * g.in_y;
      for (int64_t y = 0; y < first; ++y) out[y] = scalar_t(0);
      if (g.s_y == 1) {
        for (int64_t y = first; y < last; ++y) out[y] = in[y + offset];
      } else {
        for (int64_t y = first; y < last; ++y) out[y] = in[g.s_y * y + offset];
      }
      for (int64_t y = last; y < g.out_y; ++y) out[y] = scalar_t(0);
    }
  }
}

// The adjoint of spec2col_cpu: grad_input[n][i][j][:] sums every column entry that read it.
// Each task owns one input row, so no two threads write the same place.
template <typename scalar_t>
void col2spec_cpu(const scalar_t* grad_columns, scalar_t* grad_input, const Geometry& g) {
  const int64_t tasks = g.batch * g.channels * g.in_x;
#pragma omp parallel for schedule(static) if (tasks * g.in_y * g.kernel_x > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t j = task % g.in_x;
    const int64_t plane = task / g.in_x;
    scalar_t* out = grad_input + task * g.in_y;
    for (int64_t k = 0; k < g.in_y; ++k) out[k] = scalar_t(0);
    for (int64_t a = 0; a < g.kernel_x; ++a) {
      const int64_t x = mellin_target(j, a, g.s_x, g.d_x, g.p_x, g.out_x);
      if (x < 0) continue;
      for (int64_t c = 0; c < g.kernel_y; ++c) {
        const int64_t column_row = ((plane % g.channels) * g.kernel_x + a) * g.kernel_y + c;
        const scalar_t* in = grad_columns + g.block_offset(column_row, plane / g.channels) + x * g.out_y;
        int64_t first, last;
        linear_valid_range(c, g, &first, &last);
        const int64_t offset = g.d_y * c - g.p_y;
        if (g.s_y == 1) {
          for (int64_t y = first; y < last; ++y) out[y + offset] += in[y];
        } else {
          for (int64_t y = first; y < last; ++y) out[g.s_y * y + offset] += in[y];
        }
      }
    }
  }
}

// The per-entry bodies of the CUDA kernels, looped on CPU: slower than the row kernels above,
// used only by the test ops to check the CUDA index logic without a GPU.
template <typename scalar_t>
void spec2col_elementwise_cpu(const scalar_t* input, scalar_t* columns, const Geometry& g) {
  const int64_t elements = g.column_rows() * g.batch * g.column_length();
#pragma omp parallel for schedule(static) if (elements > kParallelThreshold)
  for (int64_t index = 0; index < elements; ++index) columns[index] = column_entry(input, g, index);
}

template <typename scalar_t>
void col2spec_elementwise_cpu(const scalar_t* grad_columns, scalar_t* grad_input, const Geometry& g) {
  const int64_t elements = g.batch * g.channels * g.in_x * g.in_y;
#pragma omp parallel for schedule(static) if (elements > kParallelThreshold)
  for (int64_t index = 0; index < elements; ++index) grad_input[index] = input_gradient_entry(grad_columns, g, index);
}

}  // namespace speechbed_mellin
