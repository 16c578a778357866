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
//
// The kernels build the "Mellin rows" tensor R of shape (batch * out_x, kernel_x * channels,
// padded_y): R[(n, x)][(a, i)][q] = input[n][i][(x+s_x)(a+d_x)/(p_x+1) - 1][q - p_y], 0 where the
// row index is not an integer inside the input or q - p_y is outside [0, in_y). A linear
// correlation of R along q (stride s_y, dilation d_y, weight (C_out, kernel_x * channels,
// kernel_y)) is then exactly mcorrlcorr, as (batch * out_x, C_out, out_y).
struct Geometry {
  int64_t batch, channels, in_x, in_y, kernel_x, kernel_y, out_x, out_y;
  int64_t s_x, s_y, d_x, d_y, p_x, p_y;

  // Length of a row of R: just long enough for out_y outputs of the linear correlation.
  MELLIN_HOST_DEVICE int64_t padded_y() const { return s_y * (out_y - 1) + d_y * (kernel_y - 1) + 1; }
  MELLIN_HOST_DEVICE int64_t rows_numel() const { return batch * out_x * kernel_x * channels * padded_y(); }
};

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

// One entry of R, flat index over (n, x, a, i, q): the CUDA kernel's body, also run on CPU by
// the elementwise test op.
template <typename scalar_t>
MELLIN_HOST_DEVICE inline scalar_t mellin_rows_entry(const scalar_t* input, const Geometry& g, int64_t index) {
  const int64_t padded = g.padded_y();
  const int64_t q = index % padded;
  int64_t rest = index / padded;
  const int64_t i = rest % g.channels;
  rest /= g.channels;
  const int64_t a = rest % g.kernel_x;
  rest /= g.kernel_x;
  const int64_t x = rest % g.out_x;
  const int64_t n = rest / g.out_x;
  const int64_t source_x = mellin_source(x, a, g.s_x, g.d_x, g.p_x, g.in_x);
  const int64_t source_y = q - g.p_y;
  if (source_x < 0 || source_y < 0 || source_y >= g.in_y) return scalar_t(0);
  return input[((n * g.channels + i) * g.in_x + source_x) * g.in_y + source_y];
}

// One entry (n, i, j, k) of the input gradient from the gradient of R: the sum over Mellin
// taps a of the entries of R that copied it, found through the inverse map, so parallel
// writers never collide (no atomics, deterministic).
template <typename scalar_t>
MELLIN_HOST_DEVICE inline scalar_t mellin_rows_adjoint_entry(const scalar_t* grad_rows, const Geometry& g,
                                                             int64_t index) {
  const int64_t k = index % g.in_y;
  const int64_t j = (index / g.in_y) % g.in_x;
  const int64_t i = (index / (g.in_y * g.in_x)) % g.channels;
  const int64_t n = index / (g.in_y * g.in_x * g.channels);
  const int64_t padded = g.padded_y();
  const int64_t q = k + g.p_y;
  scalar_t total = scalar_t(0);
  if (q >= padded) return total;
  for (int64_t a = 0; a < g.kernel_x; ++a) {
    const int64_t x = mellin_target(j, a, g.s_x, g.d_x, g.p_x, g.out_x);
    if (x < 0) continue;
    total += grad_rows[(((n * g.out_x + x) * g.kernel_x + a) * g.channels + i) * padded + q];
  }
  return total;
}

}  // namespace speechbed_mellin
