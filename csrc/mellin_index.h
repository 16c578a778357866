// Index arithmetic of the Mellin ops, shared by the CPU and CUDA kernels.
// Included by mellin_cpu.h and mellin_cuda.cu; plain C++ with no torch dependency.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MELLIN_HOST_DEVICE __host__ __device__
#else
#define MELLIN_HOST_DEVICE
#endif

namespace speechbed_mellin {

// Sizes and parameters of one mcorrlcorr call: Mellin on axis x, linear on axis y.
// The columns matrix is (channels * kernel_x * kernel_y, batch * out_x * out_y): rows ordered
// (channel, a, c) like weight.view(C_out, -1), columns (n, x, y), so that one GEMM
// weight_matrix @ columns gives the output of the whole batch as (C_out, batch, out_x * out_y).
struct Geometry {
  int64_t batch, channels, in_x, in_y, kernel_x, kernel_y, out_x, out_y;
  int64_t s_x, s_y, d_x, d_y, p_x, p_y;

  MELLIN_HOST_DEVICE int64_t column_rows() const { return channels * kernel_x * kernel_y; }
  MELLIN_HOST_DEVICE int64_t column_length() const { return out_x * out_y; }
  // Offset of the (out_x * out_y) block of example n in row `row` of the columns matrix.
  MELLIN_HOST_DEVICE int64_t block_offset(int64_t row, int64_t n) const {
    return (row * batch + n) * column_length();
  }
};

MELLIN_HOST_DEVICE inline int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

MELLIN_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

// Input row read by output row x through Mellin tap a: (x+s)(a+d)/(p+1) - 1, or -1.
MELLIN_HOST_DEVICE inline int64_t mellin_source(int64_t x, int64_t a, int64_t s, int64_t d, int64_t p,
                                                int64_t in_size) {
  const int64_t product = (x + s) * (a + d);
  if (product % (p + 1) != 0) return -1;
  const int64_t source = product / (p + 1) - 1;  // product >= 1, so source >= 0
  return source < in_size ? source : -1;
}

// Output row that reads input row j through Mellin tap a (the inverse map), or -1.
MELLIN_HOST_DEVICE inline int64_t mellin_target(int64_t j, int64_t a, int64_t s, int64_t d, int64_t p,
                                                int64_t out_size) {
  const int64_t product = (j + 1) * (p + 1);
  if (product % (a + d) != 0) return -1;
  const int64_t x = product / (a + d) - s;
  return (x >= 0 && x < out_size) ? x : -1;
}

// Input column read by output column y through linear tap c: s*y + d*c - p, or -1.
MELLIN_HOST_DEVICE inline int64_t linear_source(int64_t y, int64_t c, int64_t s, int64_t d, int64_t p,
                                                int64_t in_size) {
  const int64_t source = s * y + d * c - p;
  return (source >= 0 && source < in_size) ? source : -1;
}

// Output column that reads input column j through linear tap c, or -1.
MELLIN_HOST_DEVICE inline int64_t linear_target(int64_t j, int64_t c, int64_t s, int64_t d, int64_t p,
                                                int64_t out_size) {
  const int64_t shifted = j + p - d * c;
  if (shifted < 0 || shifted % s != 0) return -1;
  const int64_t y = shifted / s;
  return y < out_size ? y : -1;
}

// Output columns y in [first, last) whose tap c lands inside the input (s*y + d*c - p in range).
MELLIN_HOST_DEVICE inline void linear_valid_range(int64_t c, const Geometry& g, int64_t* first, int64_t* last) {
  const int64_t offset = g.d_y * c - g.p_y;
  int64_t lo = ceil_div(-offset, g.s_y);
  int64_t hi = floor_div(g.in_y - 1 - offset, g.s_y) + 1;
  lo = lo < 0 ? 0 : lo;
  hi = hi > g.out_y ? g.out_y : hi;
  *first = lo;
  *last = hi < lo ? lo : hi;
}

// One entry of the columns matrix, index = ((i, a, c) row, (n, x, y) column) flattened:
// the CUDA kernel's body, also run on CPU by the elementwise test op.
template <typename scalar_t>
MELLIN_HOST_DEVICE inline scalar_t column_entry(const scalar_t* input, const Geometry& g, int64_t index) {
  const int64_t y = index % g.out_y;
  const int64_t x = (index / g.out_y) % g.out_x;
  const int64_t n = (index / g.column_length()) % g.batch;
  const int64_t row = index / (g.column_length() * g.batch);  // (i, a, c)
  const int64_t c = row % g.kernel_y;
  const int64_t a = (row / g.kernel_y) % g.kernel_x;
  const int64_t plane = n * g.channels + row / (g.kernel_y * g.kernel_x);
  const int64_t source_x = mellin_source(x, a, g.s_x, g.d_x, g.p_x, g.in_x);
  const int64_t source_y = linear_source(y, c, g.s_y, g.d_y, g.p_y, g.in_y);
  return (source_x >= 0 && source_y >= 0) ? input[(plane * g.in_x + source_x) * g.in_y + source_y] : scalar_t(0);
}

// One entry (n, i, j, k) of the input gradient: the sum of the column entries that read it,
// found through the inverse maps, so parallel writers never collide (no atomics).
template <typename scalar_t>
MELLIN_HOST_DEVICE inline scalar_t input_gradient_entry(const scalar_t* grad_columns, const Geometry& g,
                                                        int64_t index) {
  const int64_t k = index % g.in_y;
  const int64_t j = (index / g.in_y) % g.in_x;
  const int64_t plane = index / (g.in_y * g.in_x);
  const int64_t n = plane / g.channels;
  const int64_t i = plane % g.channels;
  scalar_t total = scalar_t(0);
  for (int64_t a = 0; a < g.kernel_x; ++a) {
    const int64_t x = mellin_target(j, a, g.s_x, g.d_x, g.p_x, g.out_x);
    if (x < 0) continue;
    for (int64_t c = 0; c < g.kernel_y; ++c) {
      const int64_t y = linear_target(k, c, g.s_y, g.d_y, g.p_y, g.out_y);
      if (y < 0) continue;
      const int64_t row = (i * g.kernel_x + a) * g.kernel_y + c;
      total += grad_columns[g.block_offset(row, n) + x * g.out_y + y];
    }
  }
  return total;
}

}  // namespace speechbed_mellin
