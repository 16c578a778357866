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
// The columns tensor is (batch, channels * kernel_x * kernel_y, out_x * out_y), rows ordered
// (channel, a, c) like weight.view(C_out, -1), so that output = weight_matrix @ columns.
struct Geometry {
  int64_t batch, channels, in_x, in_y, kernel_x, kernel_y, out_x, out_y;
  int64_t s_x, s_y, d_x, d_y, p_x, p_y;

  MELLIN_HOST_DEVICE int64_t column_rows() const { return channels * kernel_x * kernel_y; }
  MELLIN_HOST_DEVICE int64_t column_length() const { return out_x * out_y; }
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

}  // namespace speechbed_mellin
