// Header-only CPU kernels of the Mellin ops (OpenMP): the Mellin rows tensor and its adjoint.
// Included by mellin_ops.cpp; plain C++ on raw contiguous buffers (layouts in mellin_index.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "mellin_index.h"

namespace speechbed_mellin {

// Below this many element copies a kernel runs on one thread: waking a team costs more.
constexpr int64_t kParallelThreshold = 1 << 15;

// R[(n, x)][(a, i)][:] = zeros, then input row (n, i, mellin_source(x, a)) copied at offset p_y.
// One task per (n, x, a), so the index arithmetic is done once for all channels; each row of R
// is contiguous, so a task is a sequence of short copies.
template <typename scalar_t>
void mellin_rows_cpu(const scalar_t* input, scalar_t* rows, const Geometry& g) {
  const int64_t padded = g.padded_y();
  const int64_t tasks = g.batch * g.out_x * g.kernel_x;
  const int64_t plane = g.in_x * g.in_y;
  // the part of a row of R that comes from the input: q in [first, last)
  const int64_t first = std::min(g.p_y, padded);
  const int64_t last = std::min(g.p_y + g.in_y, padded);
  const bool single = padded == 1 && first == 0 && last == 1;  // 1-D ops: one element per row
#pragma omp parallel for schedule(static) if (tasks * g.channels * padded > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t a = task % g.kernel_x;
    const int64_t x = (task / g.kernel_x) % g.out_x;
    const int64_t n = task / (g.kernel_x * g.out_x);
    scalar_t* out = rows + task * g.channels * padded;
    const int64_t source_x = mellin_source(x, a, g.s_x, g.d_x, g.p_x, g.in_x);
    if (source_x < 0) {
      std::fill(out, out + g.channels * padded, scalar_t(0));
      continue;
    }
    const scalar_t* in = input + n * g.channels * plane + source_x * g.in_y;
    if (single) {
      for (int64_t i = 0; i < g.channels; ++i) out[i] = in[i * plane];
      continue;
    }
    for (int64_t i = 0; i < g.channels; ++i, out += padded, in += plane) {
      std::fill(out, out + first, scalar_t(0));
      std::copy(in, in + (last - first), out + first);
      std::fill(out + last, out + padded, scalar_t(0));
    }
  }
}

// The adjoint of mellin_rows_cpu: grad_input rows (n, :, j) sum the rows of grad_rows that
// copied them. Each task owns (n, j) for all channels, so no two threads write the same place.
template <typename scalar_t>
void mellin_rows_adjoint_cpu(const scalar_t* grad_rows, scalar_t* grad_input, const Geometry& g) {
  const int64_t padded = g.padded_y();
  const int64_t tasks = g.batch * g.in_x;
  const int64_t plane = g.in_x * g.in_y;
  const int64_t length = std::max<int64_t>(0, std::min(g.in_y, padded - g.p_y));  // k with k + p_y < padded
#pragma omp parallel for schedule(static) if (tasks * g.channels * g.in_y * g.kernel_x > kParallelThreshold)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t j = task % g.in_x;
    const int64_t n = task / g.in_x;
    scalar_t* out_first = grad_input + n * g.channels * plane + j * g.in_y;
    for (int64_t i = 0; i < g.channels; ++i) std::fill(out_first + i * plane, out_first + i * plane + g.in_y, scalar_t(0));
    for (int64_t a = 0; a < g.kernel_x; ++a) {
      const int64_t x = mellin_target(j, a, g.s_x, g.d_x, g.p_x, g.out_x);
      if (x < 0) continue;
      const scalar_t* in = grad_rows + ((n * g.out_x + x) * g.kernel_x + a) * g.channels * padded + g.p_y;
      if (length == 1) {
        for (int64_t i = 0; i < g.channels; ++i) out_first[i * plane] += in[i * padded];
        continue;
      }
      for (int64_t i = 0; i < g.channels; ++i) {
        scalar_t* out = out_first + i * plane;
        const scalar_t* source = in + i * padded;
        for (int64_t k = 0; k < length; ++k) out[k] += source[k];
      }
    }
  }
}

// The per-entry bodies of the CUDA kernels, looped on CPU: slower than the row kernels above,
// used only by the test ops to check the CUDA index logic without a GPU.
template <typename scalar_t>
void mellin_rows_elementwise_cpu(const scalar_t* input, scalar_t* rows, const Geometry& g) {
  const int64_t elements = g.rows_numel();
#pragma omp parallel for schedule(static) if (elements > kParallelThreshold)
  for (int64_t index = 0; index < elements; ++index) rows[index] = mellin_rows_entry(input, g, index);
}

template <typename scalar_t>
void mellin_rows_adjoint_elementwise_cpu(const scalar_t* grad_rows, scalar_t* grad_input, const Geometry& g) {
  const int64_t elements = g.batch * g.channels * g.in_x * g.in_y;
#pragma omp parallel for schedule(static) if (elements > kParallelThreshold)
  for (int64_t index = 0; index < elements; ++index) {
    grad_input[index] = mellin_rows_adjoint_entry(grad_rows, g, index);
  }
}

}  // namespace speechbed_mellin
