// Torch bindings of the Mellin ops: speechbed_mellin::mcorrlcorr and its backward, with autograd.
// Built by speechbed.mellin.extension (torch.utils.cpp_extension); mcorr1d is the Y=1 case.
//
// Forward: R = mellin_rows(input) (mellin_index.h), then one ATen linear correlation of R
// along Y (conv1d; a plain GEMM when Y is 1), reshaped to (N, C_out, X_out, Y_out).
// Backward: ATen's convolution backward gives grad R and grad weight; the fused, deterministic
// adjoint of mellin_rows gives grad input.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <tuple>
#include <vector>

#include "mellin_cpu.h"
#include "mellin_rows.h"

namespace speechbed_mellin {

namespace {

Geometry geometry_of(at::IntArrayRef input_shape, int64_t kernel_x, int64_t kernel_y, at::IntArrayRef s,
                     at::IntArrayRef d, at::IntArrayRef p, at::IntArrayRef output_size) {
  TORCH_CHECK(input_shape.size() == 4, "mcorrlcorr: input must be (N, C_in, X, Y), got ", input_shape);
  TORCH_CHECK(kernel_x >= 1 && kernel_y >= 1, "mcorrlcorr: kernel sizes must be positive");
  TORCH_CHECK(s.size() == 2 && d.size() == 2 && p.size() == 2 && output_size.size() == 2,
              "mcorrlcorr: s, d, p and output_size must be pairs");
  TORCH_CHECK(s[0] >= 1 && s[1] >= 1 && d[0] >= 1 && d[1] >= 1, "mcorrlcorr: s and d must be >= 1");
  TORCH_CHECK(p[0] >= 0 && p[1] >= 0, "mcorrlcorr: p must be >= 0");
  TORCH_CHECK(output_size[0] >= 1 && output_size[1] >= 1, "mcorrlcorr: output_size must be positive");
  Geometry g;
  g.batch = input_shape[0];
  g.channels = input_shape[1];
  g.in_x = input_shape[2];
  g.in_y = input_shape[3];
  g.kernel_x = kernel_x;
  g.kernel_y = kernel_y;
  g.out_x = output_size[0];
  g.out_y = output_size[1];
  g.s_x = s[0];
  g.s_y = s[1];
  g.d_x = d[0];
  g.d_y = d[1];
  g.p_x = p[0];
  g.p_y = p[1];
  return g;
}

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef s, at::IntArrayRef d,
                       at::IntArrayRef p, at::IntArrayRef output_size) {
  TORCH_CHECK(weight.dim() == 4, "mcorrlcorr: weight must be (C_out, C_in, Kx, Ky), got ", weight.sizes());
  TORCH_CHECK(input.dim() == 4 && weight.size(1) == input.size(1), "mcorrlcorr: weight has ", weight.size(1),
              " input channels but input has shape ", input.sizes());
  return geometry_of(input.sizes(), weight.size(2), weight.size(3), s, d, p, output_size);
}

// R of a contiguous input, (N * X_out, Kx * C_in, padded_y); `elementwise` runs the CUDA
// kernel's per-entry body on CPU (for tests).
at::Tensor rows_of(const at::Tensor& input, const Geometry& g, bool elementwise = false) {
  auto rows = at::empty({g.batch * g.out_x, g.kernel_x * g.channels, g.padded_y()}, input.options());
#ifdef SPEECHBED_MELLIN_WITH_CUDA
  if (input.is_cuda()) {
    mellin_rows_cuda(input, rows, g);
    return rows;
  }
#endif
  TORCH_CHECK(input.is_cpu(), "mcorrlcorr: the extension was built without CUDA, input is on ", input.device());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "mellin_rows_cpu", [&] {
    if (elementwise) {
      mellin_rows_elementwise_cpu<scalar_t>(input.const_data_ptr<scalar_t>(), rows.mutable_data_ptr<scalar_t>(), g);
    } else {
      mellin_rows_cpu<scalar_t>(input.const_data_ptr<scalar_t>(), rows.mutable_data_ptr<scalar_t>(), g);
    }
  });
  return rows;
}

// The adjoint of rows_of: grad input (N, C_in, X, Y) from a contiguous grad R.
at::Tensor input_gradient_of(const at::Tensor& grad_rows, const Geometry& g, bool elementwise = false) {
  auto grad_input = at::empty({g.batch, g.channels, g.in_x, g.in_y}, grad_rows.options());
#ifdef SPEECHBED_MELLIN_WITH_CUDA
  if (grad_rows.is_cuda()) {
    mellin_rows_adjoint_cuda(grad_rows, grad_input, g);
    return grad_input;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(grad_rows.scalar_type(), "mellin_rows_adjoint_cpu", [&] {
    if (elementwise) {
      mellin_rows_adjoint_elementwise_cpu<scalar_t>(grad_rows.const_data_ptr<scalar_t>(),
                                                    grad_input.mutable_data_ptr<scalar_t>(), g);
    } else {
      mellin_rows_adjoint_cpu<scalar_t>(grad_rows.const_data_ptr<scalar_t>(),
                                        grad_input.mutable_data_ptr<scalar_t>(), g);
    }
  });
  return grad_input;
}

// weight (C_out, C_in, Kx, Ky) as the linear correlation's (C_out, Kx * C_in, Ky), matching R.
at::Tensor weight_rows_of(const at::Tensor& weight) {
  return weight.permute({0, 2, 1, 3}).reshape({weight.size(0), weight.size(2) * weight.size(1), weight.size(3)});
}

}  // namespace

at::Tensor mcorrlcorr_forward(const at::Tensor& input_any, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                              at::IntArrayRef s, at::IntArrayRef d, at::IntArrayRef p, at::IntArrayRef output_size) {
  const auto input = input_any.contiguous();
  const Geometry g = make_geometry(input, weight, s, d, p, output_size);
  const int64_t out_channels = weight.size(0);
  const auto rows = rows_of(input, g);
  const auto weight_rows = weight_rows_of(weight);
  at::Tensor output;  // (N * X_out, C_out, Y_out)
  if (g.padded_y() == 1) {
    // Y is a single position: the correlation is one GEMM (faster than a kernel-1 conv1d)
    const auto flat = rows.view({g.batch * g.out_x, g.kernel_x * g.channels});
    const auto taps = weight_rows.view({out_channels, g.kernel_x * g.channels}).t();
    output = (bias.has_value() && bias->defined()) ? at::addmm(*bias, flat, taps) : at::mm(flat, taps);
    output = output.unsqueeze(2);
  } else {
    const std::vector<int64_t> stride = {g.s_y}, padding = {0}, dilation = {g.d_y};
    output = at::conv1d(rows, weight_rows, bias, stride, padding, dilation);
  }
  return output.view({g.batch, g.out_x, out_channels, g.out_y}).permute({0, 2, 1, 3}).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mcorrlcorr_backward(
    const at::Tensor& grad_output, const at::Tensor& input_any, const at::Tensor& weight, at::IntArrayRef s,
    at::IntArrayRef d, at::IntArrayRef p, at::IntArrayRef output_size, std::array<bool, 3> output_mask) {
  const auto input = input_any.contiguous();
  const Geometry g = make_geometry(input, weight, s, d, p, output_size);
  const int64_t out_channels = weight.size(0);
  const int64_t taps = g.kernel_x * g.channels;
  // (N * X_out, C_out, Y_out), the layout of the forward's correlation output
  const auto grad_rows_output =
      grad_output.permute({0, 2, 1, 3}).reshape({g.batch * g.out_x, out_channels, g.out_y});
  const auto weight_rows = weight_rows_of(weight);
  at::Tensor rows;
  if (output_mask[1]) rows = rows_of(input, g);

  at::Tensor grad_rows, grad_weight_rows, grad_bias;
  if (g.padded_y() == 1) {
    const auto grad_flat = grad_rows_output.view({g.batch * g.out_x, out_channels});
    const auto weight_matrix = weight_rows.view({out_channels, taps});
    if (output_mask[0]) grad_rows = at::mm(grad_flat, weight_matrix).view({g.batch * g.out_x, taps, 1});
    if (output_mask[1]) {
      grad_weight_rows = at::mm(grad_flat.t(), rows.view({g.batch * g.out_x, taps})).view({out_channels, taps, 1});
    }
    if (output_mask[2]) grad_bias = grad_flat.sum(0);
  } else {
    // convolution_backward needs the input only for grad weight; an empty stand-in shapes grad R
    const auto rows_or_shape =
        rows.defined() ? rows : at::empty({g.batch * g.out_x, taps, g.padded_y()}, input.options());
    const std::vector<int64_t> bias_sizes = {out_channels};
    const std::vector<int64_t> stride = {g.s_y}, padding = {0}, dilation = {g.d_y}, output_padding = {0};
    std::tie(grad_rows, grad_weight_rows, grad_bias) =
        at::convolution_backward(grad_rows_output, rows_or_shape, weight_rows, at::IntArrayRef(bias_sizes), stride,
                                 padding, dilation, false, output_padding, 1, output_mask);
  }
  at::Tensor grad_input, grad_weight;
  if (output_mask[0]) grad_input = input_gradient_of(grad_rows.contiguous(), g);
  if (output_mask[1]) {
    grad_weight = grad_weight_rows.view({out_channels, g.kernel_x, g.channels, g.kernel_y})
                      .permute({0, 2, 1, 3})
                      .contiguous();
  }
  return {grad_input, grad_weight, grad_bias};
}

// R and its adjoint on their own, for tests; `elementwise` runs the CUDA kernels' per-entry
// bodies on CPU, so the CUDA index logic is checked on machines without a GPU.
at::Tensor mellin_rows_op(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef s, at::IntArrayRef d,
                          at::IntArrayRef p, at::IntArrayRef output_size, bool elementwise) {
  TORCH_CHECK(kernel_size.size() == 2, "mellin_rows: kernel_size must be a pair");
  const Geometry g = geometry_of(input.sizes(), kernel_size[0], kernel_size[1], s, d, p, output_size);
  return rows_of(input.contiguous(), g, elementwise);
}

at::Tensor mellin_rows_adjoint_op(const at::Tensor& grad_rows, at::IntArrayRef input_shape,
                                  at::IntArrayRef kernel_size, at::IntArrayRef s, at::IntArrayRef d, at::IntArrayRef p,
                                  at::IntArrayRef output_size, bool elementwise) {
  TORCH_CHECK(kernel_size.size() == 2, "mellin_rows_adjoint: kernel_size must be a pair");
  const Geometry g = geometry_of(input_shape, kernel_size[0], kernel_size[1], s, d, p, output_size);
  TORCH_CHECK(grad_rows.numel() == g.rows_numel(), "mellin_rows_adjoint: grad_rows must have ", g.rows_numel(),
              " elements, got shape ", grad_rows.sizes());
  return input_gradient_of(grad_rows.contiguous(), g, elementwise);
}

namespace {

using ForwardSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                    at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef);
using BackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef,
    at::IntArrayRef, std::array<bool, 3>);

class MCorrLCorrFunction : public torch::autograd::Function<MCorrLCorrFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, at::IntArrayRef s, at::IntArrayRef d,
                            at::IntArrayRef p, at::IntArrayRef output_size) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({input, weight});
    ctx->saved_data["s"] = s.vec();
    ctx->saved_data["d"] = d.vec();
    ctx->saved_data["p"] = p.vec();
    ctx->saved_data["output_size"] = output_size.vec();
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("speechbed_mellin::mcorrlcorr", "")
                         .typed<ForwardSignature>();
    return op.call(input, weight, bias, s, d, p, output_size);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    // grad mode is on here only under create_graph; the backward op has no derivative itself
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "speechbed_mellin: the extension has no second derivatives; use the torch path "
                "(path=\"torch\" or SPEECHBED_MELLIN_PATH=torch) for double backward");
    const auto saved = ctx->get_saved_variables();
    const auto s = ctx->saved_data["s"].toIntVector();
    const auto d = ctx->saved_data["d"].toIntVector();
    const auto p = ctx->saved_data["p"].toIntVector();
    const auto output_size = ctx->saved_data["output_size"].toIntVector();
    const bool has_bias = ctx->saved_data["has_bias"].toBool();
    const std::array<bool, 3> mask = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                      has_bias && ctx->needs_input_grad(2)};
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("speechbed_mellin::mcorrlcorr_backward", "")
                         .typed<BackwardSignature>();
    auto [grad_input, grad_weight, grad_bias] = op.call(grads[0], saved[0], saved[1], s, d, p, output_size, mask);
    return {grad_input, grad_weight, grad_bias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor mcorrlcorr_autograd(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, at::IntArrayRef s, at::IntArrayRef d,
                               at::IntArrayRef p, at::IntArrayRef output_size) {
  return MCorrLCorrFunction::apply(input, weight, bias, s, d, p, output_size);
}

}  // namespace

TORCH_LIBRARY(speechbed_mellin, m) {
  m.def(
      "mcorrlcorr(Tensor input, Tensor weight, Tensor? bias, int[2] s, int[2] d, int[2] p, int[2] output_size) "
      "-> Tensor");
  m.def(
      "mcorrlcorr_backward(Tensor grad_output, Tensor input, Tensor weight, int[2] s, int[2] d, int[2] p, "
      "int[2] output_size, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
  m.def(
      "mellin_rows(Tensor input, int[2] kernel_size, int[2] s, int[2] d, int[2] p, int[2] output_size, "
      "bool elementwise) -> Tensor");
  m.def(
      "mellin_rows_adjoint(Tensor grad_rows, int[4] input_shape, int[2] kernel_size, int[2] s, int[2] d, "
      "int[2] p, int[2] output_size, bool elementwise) -> Tensor");
}

TORCH_LIBRARY_IMPL(speechbed_mellin, CPU, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
  m.impl("mellin_rows", &mellin_rows_op);
  m.impl("mellin_rows_adjoint", &mellin_rows_adjoint_op);
}

#ifdef SPEECHBED_MELLIN_WITH_CUDA
TORCH_LIBRARY_IMPL(speechbed_mellin, CUDA, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
  m.impl("mellin_rows", &mellin_rows_op);
  m.impl("mellin_rows_adjoint", &mellin_rows_adjoint_op);
}
#endif

TORCH_LIBRARY_IMPL(speechbed_mellin, Autograd, m) { m.impl("mcorrlcorr", &mcorrlcorr_autograd); }

}  // namespace speechbed_mellin
