// Torch bindings of the Mellin ops: speechbed_mellin::mcorrlcorr and its backward, with autograd.
// Built by speechbed.mellin.extension (torch.utils.cpp_extension); mcorr1d is the Y=1 case.
//
// Forward: columns = spec2col(input) for a slice of the batch, output = weight_matrix @ columns.
// Backward: grad_weight = sum grad_output @ columns^T; grad_input = col2spec(weight^T @ grad_output).
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

Geometry make_geometry(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef s, at::IntArrayRef d,
                       at::IntArrayRef p, at::IntArrayRef output_size) {
  TORCH_CHECK(input.dim() == 4, "mcorrlcorr: input must be (N, C_in, X, Y), got ", input.sizes());
  TORCH_CHECK(weight.dim() == 4, "mcorrlcorr: weight must be (C_out, C_in, Kx, Ky), got ", weight.sizes());
  TORCH_CHECK(weight.size(1) == input.size(1), "mcorrlcorr: weight has ", weight.size(1),
              " input channels but input has ", input.size(1));
  TORCH_CHECK(s.size() == 2 && d.size() == 2 && p.size() == 2 && output_size.size() == 2,
              "mcorrlcorr: s, d, p and output_size must be pairs");
  TORCH_CHECK(s[0] >= 1 && s[1] >= 1 && d[0] >= 1 && d[1] >= 1, "mcorrlcorr: s and d must be >= 1");
  TORCH_CHECK(p[0] >= 0 && p[1] >= 0, "mcorrlcorr: p must be >= 0");
  TORCH_CHECK(output_size[0] >= 1 && output_size[1] >= 1, "mcorrlcorr: output_size must be positive");
  Geometry g;
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.in_x = input.size(2);
  g.in_y = input.size(3);
  g.kernel_x = weight.size(2);
  g.kernel_y = weight.size(3);
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

Geometry slice_of(Geometry g, int64_t batch) {
  g.batch = batch;
  return g;
}

int64_t slice_length(const Geometry& g) {
  const int64_t per_example = std::max<int64_t>(1, g.column_rows() * g.column_length());
  return std::max<int64_t>(1, std::min<int64_t>(g.batch, kColumnsBudget / per_example));
}

// (batch, C*Kx*Ky, X_out*Y_out) columns of a contiguous input slice.
at::Tensor columns_of(const at::Tensor& input, const Geometry& g) {
  auto columns = at::empty({g.batch, g.column_rows(), g.column_length()}, input.options());
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
    auto target = output_flat.narrow(0, start, length);
    at::bmm_out(target, weight_matrix.unsqueeze(0).expand({length, out_channels, g.column_rows()}), columns);
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
  const auto weight_transposed = weight_matrix.t().unsqueeze(0);

  at::Tensor grad_input, grad_weight, grad_bias;
  if (output_mask[0]) grad_input = at::empty_like(input);
  if (output_mask[1]) grad_weight = at::zeros({out_channels, g.column_rows()}, weight.options());
  if (output_mask[2]) grad_bias = grad_output.sum({0, 2});

  const int64_t step = slice_length(g);
  for (int64_t start = 0; start < g.batch && (output_mask[0] || output_mask[1]); start += step) {
    const int64_t length = std::min(step, g.batch - start);
    const Geometry slice = slice_of(g, length);
    const auto grad_slice = grad_output.narrow(0, start, length);
    if (output_mask[1]) {
      const auto columns = columns_of(input.narrow(0, start, length), slice);
      grad_weight.add_(at::bmm(grad_slice, columns.transpose(1, 2)).sum(0));
    }
    if (output_mask[0]) {
      const auto grad_columns =
          at::bmm(weight_transposed.expand({length, g.column_rows(), out_channels}), grad_slice);
      auto target = grad_input.narrow(0, start, length);
      input_gradient_of(grad_columns, target, slice);
    }
  }
  if (output_mask[1]) grad_weight = grad_weight.view_as(weight);
  return {grad_input, grad_weight, grad_bias};
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
}

TORCH_LIBRARY_IMPL(speechbed_mellin, CPU, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
}

#ifdef SPEECHBED_MELLIN_WITH_CUDA
TORCH_LIBRARY_IMPL(speechbed_mellin, CUDA, m) {
  m.impl("mcorrlcorr", &mcorrlcorr_forward);
  m.impl("mcorrlcorr_backward", &mcorrlcorr_backward);
}
#endif

TORCH_LIBRARY_IMPL(speechbed_mellin, Autograd, m) { m.impl("mcorrlcorr", &mcorrlcorr_autograd); }

}  // namespace speechbed_mellin
