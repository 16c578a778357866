// Torch bindings of the Mellin ops: speechbed_mellin::mcorrlcorr and its backward, with autograd.
// Built by speechbed.mellin.extension (torch.utils.cpp_extension); mcorr1d is the Y=1 case.
//
// Forward: columns = spec2col(input) for a slice of the batch, output = weight_matrix @ columns
// (one GEMM per slice). Backward: grad_weight += grad_output @ columns^T; grad_input =
// col2spec(weight^T @ grad_output), with grad_output laid out (C_out, slice * X_out * Y_out).
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "mellin_columns.h"
#include "mellin_cpu.h"

namespace speechbed_mellin {

namespace {

// Largest columns buffer (elements) built at once; the batch is processed in slices below it.
constexpr int64_t kColumnsBudget = int64_t(1) << 22;

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

Geometry slice_of(Geometry g, int64_t batch) {
  g.batch = batch;
  return g;
}

int64_t slice_length(const Geometry& g) {
  const int64_t per_example = std::max<int64_t>(1, g.column_rows() * g.column_length());
  return std::max<int64_t>(1, std::min<int64_t>(g.batch, kColumnsBudget / per_example));
}

// (C*Kx*Ky, batch * X_out*Y_out) columns of a contiguous input slice.
at::Tensor columns_of(const at::Tensor& input, const Geometry& g) {
  auto columns = at::empty({g.column_rows(), g.batch * g.column_length()}, input.options());
#ifdef SPEECHBED_MELLIN_WITH_CUDA
  if (input.is_cuda()) {
    spec2col_cuda(input, columns, g);
    return columns;
  }
#endif
  TORCH_CHECK(input.is_cpu(), "mcorrlcorr: the extension was built without CUDA, input is on ", input.device());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "spec2col_cpu", [&] {
    spec2col_cpu<scalar_t>(input.const_data_ptr<scalar_t>(), columns.mutable_data_ptr<scalar_t>(), g);
  });
  return columns;
}

// Writes the adjoint of columns_of into grad_input (a contiguous slice).
void input_gradient_of(const at::Tensor& grad_columns, at::Tensor& grad_input, const Geometry& g) {
#ifdef SPEECHBED_MELLIN_WITH_CUDA
  if (grad_columns.is_cuda()) {
    col2spec_cuda(grad_columns, grad_input, g);
    return;
  }
#endif
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "col2spec_cpu", [&] {
    col2spec_cpu<scalar_t>(grad_columns.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), g);
  });
}

}  // namespace

at::Tensor mcorrlcorr_forward(const at::Tensor& input_any, const at::Tensor& weight_any,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef s, at::IntArrayRef d,
                              at::IntArrayRef p, at::IntArrayRef output_size) {
  const auto input = input_any.contiguous();
  const auto weight = weight_any.contiguous();
  const Geometry g = make_geometry(input, weight, s, d, p, output_size);
  const int64_t out_channels = weight.size(0);
  const auto weight_matrix = weight.view({out_channels, g.column_rows()});
  auto output = at::empty({g.batch, out_channels, g.out_x, g.out_y}, input.options());
  auto output_flat = output.view({g.batch, out_channels, g.column_length()});
  const int64_t step = slice_length(g);
  for (int64_t start = 0; start < g.batch; start += step) {
    const int64_t length = std::min(step, g.batch - start);
    const auto columns = columns_of(input.narrow(0, start, length), slice_of(g, length));
    const auto product = at::mm(weight_matrix, columns).view({out_channels, length, g.column_length()});
    output_flat.narrow(0, start, length).copy_(product.transpose(0, 1));
  }
  if (bias.has_value() && bias->defined()) {
    output.add_(bias->view({1, out_channels, 1, 1}));
  }
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> mcorrlcorr_backward(
    const at::Tensor& grad_output_any, const at::Tensor& input_any, const at::Tensor& weight_any, at::IntArrayRef s,
    at::IntArrayRef d, at::IntArrayRef p, at::IntArrayRef output_size, std::array<bool, 3> output_mask) {
  const auto input = input_any.contiguous();
  const auto weight = weight_any.contiguous();
  const Geometry g = make_geometry(input, weight, s, d, p, output_size);
  const int64_t out_channels = weight.size(0);
  const auto grad_output = grad_output_any.contiguous().view({g.batch, out_channels, g.column_length()});
  const auto weight_matrix = weight.view({out_channels, g.column_rows()});
  const auto weight_transposed = weight_matrix.t();

  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[0]) grad_input = at::empty_like(input);
  if (output_mask[1]) grad_weight = at::zeros({out_channels, g.column_rows()}, weight.options());
  if (output_mask[2]) grad_bias = grad_output.sum({0, 2});

  const int64_t step = slice_length(g);
  for (int64_t start = 0; start < g.batch && (output_mask[0] || output_mask[1]); start += step) {
    const int64_t length = std::min(step, g.batch - start);
    const Geometry slice = slice_of(g, length);
    // (C_out, slice * X_out * Y_out), the column order of the columns matrix
    const auto grad_slice =
        grad_output.narrow(0, start, length).transpose(0, 1).reshape({out_channels, length * g.column_length()});
    if (output_mask[1]) {
      const auto columns = columns_of(input.narrow(0, start, length), slice);
      grad_weight.addmm_(grad_slice, columns.t());
    }
    if (output_mask[0]) {
      const auto grad_columns = at::mm(weight_transposed, grad_slice);
      auto target = grad_input.narrow(0, start, length);
      input_gradient_of(grad_columns, target, slice);
    }
  }
  if (output_mask[1]) grad_weight = grad_weight.view_as(weight);
  return {grad_input, grad_weight, grad_bias};
}

// The columns matrix and its adjoint on their own, for tests. With `elementwise`, the CPU runs
// the per-entry bodies of the CUDA kernels (column_entry, input_gradient_entry) instead of the
// row loops of mellin_cpu.h, so the CUDA index logic is checked on machines without a GPU.
at::Tensor columns_op(const at::Tensor& input_any, at::IntArrayRef kernel_size, at::IntArrayRef s, at::IntArrayRef d,
                      at::IntArrayRef p, at::IntArrayRef output_size, bool elementwise) {
  const auto input = input_any.contiguous();
  TORCH_CHECK(kernel_size.size() == 2, "columns: kernel_size must be a pair");
  const Geometry g = geometry_of(input.sizes(), kernel_size[0], kernel_size[1], s, d, p, output_size);
  if (!elementwise || input.is_cuda()) return columns_of(input, g);
  auto columns = at::empty({g.column_rows(), g.batch * g.column_length()}, input.options());
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "column_entry", [&] {
    spec2col_elementwise_cpu<scalar_t>(input.const_data_ptr<scalar_t>(), columns.mutable_data_ptr<scalar_t>(), g);
  });
  return columns;
}

at::Tensor columns_adjoint_op(const at::Tensor& grad_columns_any, at::IntArrayRef input_shape,
                              at::IntArrayRef kernel_size, at::IntArrayRef s, at::IntArrayRef d, at::IntArrayRef p,
                              at::IntArrayRef output_size, bool elementwise) {
  const auto grad_columns = grad_columns_any.contiguous();
  TORCH_CHECK(kernel_size.size() == 2, "columns_adjoint: kernel_size must be a pair");
  const Geometry g = geometry_of(input_shape, kernel_size[0], kernel_size[1], s, d, p, output_size);
  TORCH_CHECK(grad_columns.dim() == 2 && grad_columns.size(0) == g.column_rows() &&
                  grad_columns.size(1) == g.batch * g.column_length(),
              "columns_adjoint: grad_columns must be (", g.column_rows(), ", ", g.batch * g.column_length(),
              "), got ", grad_columns.sizes());
  auto grad_input = at::empty(input_shape, grad_columns.options());
  if (!elementwise || grad_columns.is_cuda()) {
    input_gradient_of(grad_columns, grad_input, g);
    return grad_input;
  }
  AT_DISPATCH_FLOATING_TYPES(grad_columns.scalar_type(), "input_gradient_entry", [&] {
    col2spec_elementwise_cpu<scalar_t>(grad_columns.const_data_ptr<scalar_t>(),
                                       grad_input.mutable_data_ptr<scalar_t>(), g);
  });
  return grad_input;
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
    auto [grad_input, grad_weight, grad_bias] =
        op.call(grads[0], saved[0], saved[1], s, d, p, output_size, mask);
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
      "columns(Tensor input, int[2] kernel_size, int[2] s, int[2] d, int[2] p, int[2] output_size, "
      "bool elementwise) -> Tensor");
  m.def(
      "columns_adjoint(Tensor grad_columns, int[4] input_shape, int[2] kernel_size, int[2] s, int[2] d, "
      "int[2] p, int[2] output_size, bool elementwise) -> Tensor");
}

TORCH_LIBRARY_IMPL(speechbed_mellin, CPU, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
  m.impl("columns", &columns_op);
  m.impl("columns_adjoint", &columns_adjoint_op);
}

#ifdef SPEECHBED_MELLIN_WITH_CUDA
TORCH_LIBRARY_IMPL(speechbed_mellin, CUDA, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
  m.impl("columns", &columns_op);
  m.impl("columns_adjoint", &columns_adjoint_op);
}
#endif

TORCH_LIBRARY_IMPL(speechbed_mellin, Autograd, m) { m.impl("mcorrlcorr", &mcorrlcorr_autograd); }

}  // namespace speechbed_mellin
