// A whole network's training step (forward, softmax cross-entropy, backward) composed from
// its blocks, as cnnlab/engine/plan.py describes them: one call from Python per step instead
// of a few dozen. The blocks arrive as a Program (program.h: one typed struct per kind);
// forward and backward visit each block by its type. The step is a method of the Program
// (program.gradients(...), program.logits(...)): a method call from Python costs a third of
// an op's that takes the Program as an argument (4 against 11-16 us, measured), and the
// profiler still shows it as cnnlab::net_gradients / cnnlab::net_logits. A method is not
// dispatched, so it sets what the dispatcher set for the op: the ATen calls inside run below
// autograd (each one's autograd layer skipped: 20% of a 50-call loop, measured), and the
// tensors written in place (the gradients, the moving statistics) get their versions bumped.
//
// Maps are channels-last (N, H, W, C). Same float32 operations as PyTorch's, in other
// summation orders (no -ffast-math).

#include <ATen/ATen.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/record_function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <variant>
#include <vector>

#include "blocks.h"
#include "layers.h"
#include "program.h"

namespace {

using cnnlab::Block;
using cnnlab::mutant;
using cnnlab::Program;
namespace block = cnnlab::block;

// What the backward pass needs of a block's forward pass.
struct Saved {
  const Block* block = nullptr;
  at::Tensor in, out, mask;
  cnnlab::PoolOut pool;
  std::vector<int64_t> shape;  // a map's (N, H, W, C) before flatten, padding, global pooling
  int64_t weight = -1;         // index of the block's first weight tensor
  cnnlab::Cache cache;
  at::Tensor kernel;  // a convolution's (Cout, Cin, kh, kw) weights (a 1-D one's as kh = 1)
  bool in_needs = false;  // the block's input depends on a weight: it needs a gradient
};

// The forward pass, one block at a time: h the running map, each block's weights, dropout
// masks and moving statistics taken in order.
struct Forward {
  at::TensorList weights, masks, state;
  bool train = false;
  int64_t n = 0;
  at::Tensor h;
  size_t wi = 0, mi = 0, si = 0;
  std::vector<at::Tensor> slots{};  // a graph's kept maps (program.h: Store, Load, AddStored)
  bool needs = false;               // the running map depends on a weight (else no gradient)
  std::vector<char> slot_needs{};   // the same, for each kept map

  at::Tensor take(bool has) {
    if (!has) return {};
    TORCH_CHECK(wi < weights.size(), "net: too few weight tensors for the program");
    return weights[wi++];
  }
  void map_needed(const char* what) const {
    TORCH_CHECK(h.dim() == 4, "net: ", what, " needs (N, H, W, C) maps");
  }

  void run(const block::ConvPoolRelu& b, Saved& s) {
    TORCH_CHECK(wi + 2 <= weights.size(), "net: too few weight tensors for the program");
    s.weight = static_cast<int64_t>(wi);
    s.in = h;
    s.pool = cnnlab::conv_pool_relu_forward(h, weights[wi], weights[wi + 1], b.pooled_h,
                                            b.pooled_w, train);
    wi += 2;
    h = s.pool.a;
  }
  void run(const block::Flatten&, Saved& s) {
    s.shape = h.sizes().vec();
    h = h.reshape({n, -1});
  }
  void run(const block::Dropout&, Saved& s) {
    if (!train) return;
    TORCH_CHECK(mi < masks.size(), "net: too few dropout masks for the program");
    s.mask = masks[mi++];
    TORCH_CHECK(s.mask.sizes() == h.sizes() && s.mask.is_contiguous(),
                "net: a dropout mask is not shaped as its input");
    h = h * s.mask;
  }
  void run(const block::Dense& b, Saved& s) {
    TORCH_CHECK(wi + 2 <= weights.size(), "net: too few weight tensors for the program");
    TORCH_CHECK(h.dim() == 2, "net: a dense layer needs flat (N, F) inputs");
    s.weight = static_cast<int64_t>(wi);
    s.in = h;
    h = at::addmm(weights[wi + 1], h, weights[wi].t());
    wi += 2;
    cnnlab::activate_(h, b.activation);
    s.out = h;
  }
  void run(const block::Conv& b, Saved& s) {
    map_needed("a convolution");
    s.weight = static_cast<int64_t>(wi);
    const at::Tensor w = take(true), bias = take(b.bias);
    s.kernel = w.dim() == 3 ? w.unsqueeze(2) : w;  // Conv1D: (Cout, Cin, 1, k)
    h = cnnlab::conv_forward(h, s.kernel, bias, b.args, s.cache);
  }
  void run(const block::Pool& b, Saved& s) {
    map_needed("pooling");
    h = cnnlab::pool_forward(h, b.args, s.cache);
  }
  void run(const block::Activation& b, Saved& s) {
    h = h.clone();  // the input may be saved by the block before
    cnnlab::activate_(h, b.activation);
    s.out = h;
  }
  void run(const block::BatchNorm& b, Saved& s) {
    map_needed("batch normalisation");
    TORCH_CHECK(si + 2 <= state.size(), "net: too few state tensors for the program");
    if (b.scale || b.center) s.weight = static_cast<int64_t>(wi);
    const at::Tensor gamma = take(b.scale), beta = take(b.center);
    at::Tensor mean = state[si], var = state[si + 1];
    si += 2;
    at::Tensor residual;
    if (b.add_slot >= 0) {  // a residual block's Add, before the ReLU
      residual = kept(b.add_slot);
      needs = needs || slot_needs[static_cast<size_t>(b.add_slot)] != 0;
    }
    h = cnnlab::batch_norm_forward(h, gamma, beta, mean, var, b.args, s.cache, train, residual);
  }
  void run(const block::GlobalMax&, Saved& s) {
    map_needed("global pooling");
    h = cnnlab::global_max_forward(h, s.cache);
  }
  void run(const block::Rescale& b, Saved&) { h = h * b.scale + b.offset; }
  void run(const block::Pad& b, Saved& s) {
    map_needed("padding");
    s.shape = h.sizes().vec();
    const cnnlab::Pads& q = b.pads;
    h = at::constant_pad_nd(h, {0, 0, q.left, q.right, q.top, q.bottom}, 0);
  }
  void run(const block::GlobalAverage&, Saved& s) {
    s.shape = h.sizes().vec();
    map_needed("global pooling");
    h = at::mean(h.view({n, s.shape[1] * s.shape[2], s.shape[3]}), {1});
  }
  at::Tensor& kept(int64_t slot) {
    at::Tensor& t = slots[static_cast<size_t>(slot)];
    TORCH_CHECK(t.defined(), "net: slot ", slot, " is read before a map is kept in it");
    return t;
  }
  void run(const block::Store& b, Saved&) {
    slots[static_cast<size_t>(b.slot)] = h;
    slot_needs[static_cast<size_t>(b.slot)] = needs;
  }
  void run(const block::Load& b, Saved&) {
    h = kept(b.slot);
    needs = slot_needs[static_cast<size_t>(b.slot)] != 0;
  }
  // a merge's input needs a gradient where either of its maps does
  void merged(int64_t slot, Saved& s) {
    needs = needs || slot_needs[static_cast<size_t>(slot)] != 0;
    s.in_needs = needs;
  }
  void run(const block::AddStored& b, Saved& s) {
    merged(b.slot, s);
    const at::Tensor& other = kept(b.slot);
    TORCH_CHECK(other.sizes() == h.sizes(), "net: an Add of maps of different shapes");
    h = h + other;
  }
  void run(const block::Concat& b, Saved& s) {
    merged(b.slot, s);
    const at::Tensor& other = kept(b.slot);
    TORCH_CHECK(other.dim() == h.dim() && other.sizes().slice(0, h.dim() - 1) ==
                                              h.sizes().slice(0, h.dim() - 1),
                "net: a Concatenate of maps of different sizes");
    s.shape = {h.size(-1)};  // the running map's channels, where the gradient splits
    h = at::cat({h, other}, -1);
  }
};

struct ForwardPass {
  at::Tensor out;
  std::vector<Saved> saved;
  int64_t slots = 0;
};

ForwardPass forward(const at::Tensor& x, const Program& program, at::TensorList weights,
                    at::TensorList masks, at::TensorList state, bool train) {
  Forward f{weights, masks, state, train, x.size(0), x};
  f.slots.resize(static_cast<size_t>(program.slots));
  f.slot_needs.resize(static_cast<size_t>(program.slots), 0);
  ForwardPass pass;
  pass.saved.reserve(program.blocks.size());
  for (const Block& b : program.blocks) {
    Saved s;
    s.block = &b;
    s.in_needs = f.needs;
    std::visit([&](const auto& blk) { f.run(blk, s); }, b);
    f.needs = f.needs || s.weight >= 0;
    pass.saved.push_back(std::move(s));
  }
  TORCH_CHECK(f.wi == weights.size(), "net: more weight tensors than the program uses");
  TORCH_CHECK(f.si == state.size(), "net: more state tensors than the program uses");
  pass.out = f.h;
  pass.slots = program.slots;
  return pass;
}

// The backward pass, last block first: g the running gradient, the weights' gradients
// written into grads; `below`: a gradient is needed for the block's input.
struct Backward {
  at::TensorList weights, grads;
  int64_t n = 0;
  at::Tensor g;  // undefined where no gradient reaches the running map (after a Load)
  bool below = false;
  std::vector<at::Tensor> slots{};  // the kept maps' gradients, gathered from their readers

  void run(const block::ConvPoolRelu&, Saved& s) {
    at::Tensor gw = grads[s.weight], gb = grads[s.weight + 1];
    g = cnnlab::conv_pool_relu_backward(g.contiguous(), s.pool, s.in, weights[s.weight], gw, gb,
                                        below);
  }
  void run(const block::Flatten&, Saved& s) { g = g.view(s.shape); }
  void run(const block::Dropout&, Saved& s) {
    if (mutant() != 4) g.mul_(s.mask);  // mutant 4: the mask left out of the backward pass
  }
  void run(const block::Dense& b, Saved& s) {
    g = cnnlab::activation_backward(g, s.out, b.activation);
    at::Tensor gw = grads[s.weight], gb = grads[s.weight + 1];
    at::mm_out(gw, g.t(), s.in);
    at::sum_out(gb, g, {0});
    if (below) g = at::mm(g, weights[s.weight]);
  }
  void run(const block::GlobalAverage&, Saved& s) {
    const int64_t hw = s.shape[1] * s.shape[2];
    g = g.div(static_cast<double>(hw)).unsqueeze(1).expand({n, hw, s.shape[3]}).reshape(s.shape);
  }
  void run(const block::Conv& b, Saved& s) {
    at::Tensor gw = grads[s.weight].view(s.kernel.sizes());  // writes through
    at::Tensor gb = b.bias ? grads[s.weight + 1] : at::Tensor();
    g = cnnlab::conv_backward(g, s.cache, s.kernel, b.args, gw, b.bias ? &gb : nullptr, below);
  }
  void run(const block::Pool& b, Saved& s) {
    g = cnnlab::pool_backward(g.contiguous(), s.cache, b.args);
  }
  void run(const block::Activation& b, Saved& s) {
    g = cnnlab::activation_backward(g, s.out, b.activation);
  }
  void run(const block::BatchNorm& b, Saved& s) {
    const int64_t wg = s.weight, wb = s.weight + (b.scale ? 1 : 0);
    at::Tensor gg = b.scale ? grads[wg] : at::Tensor();
    at::Tensor gbeta = b.center ? grads[wb] : at::Tensor();
    cnnlab::NormArgs args = b.args;
    if (b.add_slot >= 0) {  // the ReLU's mask first: the Add's kept input gets the same
      g = at::threshold_backward(g, s.cache.out, 0);
      if (mutant() != 10) gather(b.add_slot, g);  // mutant 10: an Add's kept input gets nothing
      args.relu = false;
    }
    g = cnnlab::batch_norm_backward(g.contiguous(), s.cache, b.scale ? weights[wg] : at::Tensor(),
                                    args, b.scale ? &gg : nullptr, b.center ? &gbeta : nullptr,
                                    below);
  }
  void run(const block::GlobalMax&, Saved& s) { g = cnnlab::global_max_backward(g, s.cache); }
  void run(const block::Rescale& b, Saved&) { g = g * b.scale; }
  void run(const block::Pad& b, Saved& s) {
    g = g.narrow(1, b.pads.top, s.shape[1]).narrow(2, b.pads.left, s.shape[2]).contiguous();
  }
  // a kept map's readers' gradients, summed into its slot (a copy: g is changed in place)
  void gather(int64_t slot, const at::Tensor& grad) {
    if (!grad.defined()) return;
    at::Tensor& t = slots[static_cast<size_t>(slot)];
    t = t.defined() ? t + grad : grad.clone();
  }
  void run(const block::Store& b, Saved&) {
    at::Tensor& t = slots[static_cast<size_t>(b.slot)];
    // mutant 9: a kept map's gradient from its later readers is lost
    if (t.defined() && mutant() != 9) g = g.defined() ? g + t : t;
    t = at::Tensor();
  }
  void run(const block::Load& b, Saved&) {
    gather(b.slot, g);
    g = at::Tensor();  // the map that ran before is read no more, or is kept
  }
  void run(const block::AddStored& b, Saved&) {
    if (mutant() != 10) gather(b.slot, g);  // mutant 10: an Add's kept input gets nothing
  }
  void run(const block::Concat& b, Saved& s) {
    const int64_t c = s.shape[0], rest = g.size(-1) - c;
    // mutant 11: the kept map gets the running map's channels of the gradient
    gather(b.slot, g.narrow(-1, mutant() == 11 ? 0 : c, rest).contiguous());
    g = g.narrow(-1, 0, c).contiguous();
  }
};

void check(const at::Tensor& x, at::TensorList weights, at::TensorList state) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(),
              "net: inputs must be contiguous (N, H, W, C) on the CPU");
  for (const auto& w : weights) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.device().is_cpu(),
                "net: weights must be contiguous float32 on the CPU");
  }
  for (const auto& w : state) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.device().is_cpu(),
                "net: the moving statistics must be contiguous float32 on the CPU");
  }
}

// Evaluation-mode logits (no dropout): (N, H, W, C) -> (N, classes); program.logits().
at::Tensor net_logits(const at::Tensor& x, const Program& program,
                      at::TensorList weights, at::TensorList state) {
  check(x, weights, state);
  at::NoGradGuard no_grad;
  return forward(x, program, weights, {}, state, false).out;
}

// Writes d(sum of losses / denom)/d(weights) into grads (the weights' shapes); returns the
// sum of the softmax cross-entropy losses (float64) and the correct predictions (int64);
// program.gradients(). The moving statistics in state are updated in place.
std::tuple<at::Tensor, at::Tensor> net_gradients(const at::Tensor& x, const at::Tensor& y,
                                                 const Program& program,
                                                 at::TensorList weights, at::TensorList grads,
                                                 at::TensorList masks, at::TensorList state,
                                                 int64_t denom) {
  check(x, weights, state);
  const int64_t n = x.size(0);
  TORCH_CHECK(grads.size() == weights.size(), "net: one gradient tensor per weight tensor");
  TORCH_CHECK(y.scalar_type() == at::kLong && y.dim() == 1 && y.size(0) == n,
              "net: labels must be int64 (N,)");
  at::NoGradGuard no_grad;
  ForwardPass f = forward(x, program, weights, masks, state, true);
  const at::Tensor logits = f.out.contiguous();
  TORCH_CHECK(logits.dim() == 2, "net: the program must end in (N, classes) logits");
  const int64_t classes = logits.size(1);

  // softmax cross-entropy; g = (softmax - one-hot) / denom
  at::Tensor g = at::empty_like(logits);
  const float* lp = logits.data_ptr<float>();
  const int64_t* yp = y.data_ptr<int64_t>();
  float* gp = g.data_ptr<float>();
  double loss = 0.0;
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = lp + i * classes;
    const int64_t label = yp[i];
    TORCH_CHECK(label >= 0 && label < classes, "net: label out of range");
    int64_t arg = 0;
    for (int64_t k = 1; k < classes; ++k) {
      if (row[k] > row[arg]) arg = k;
    }
    hits += arg == label;
    const float mx = row[arg];
    float s = 0.0f;
    for (int64_t k = 0; k < classes; ++k) s += std::exp(row[k] - mx);
    const float lse = std::log(s);
    loss -= static_cast<double>(row[label] - mx - lse);
    for (int64_t k = 0; k < classes; ++k) {
      const float p = std::exp(row[k] - mx - lse);
      gp[i * classes + k] = ((k == label ? p - 1.0f : p)) / static_cast<float>(denom);
    }
  }

  // backward, last block first; no input gradient below the first block with weights
  int64_t first_weighted = static_cast<int64_t>(f.saved.size());
  for (size_t b = 0; b < f.saved.size(); ++b) {
    if (f.saved[b].weight >= 0) {
      first_weighted = static_cast<int64_t>(b);
      break;
    }
  }
  Backward back{weights, grads, n, g};
  back.slots.resize(static_cast<size_t>(f.slots));
  for (int64_t b = static_cast<int64_t>(f.saved.size()) - 1; b >= first_weighted; --b) {
    Saved& s = f.saved[static_cast<size_t>(b)];
    back.below = b > first_weighted && s.in_needs;
    std::visit(
        [&](const auto& blk) {
          using Kind = std::decay_t<decltype(blk)>;
          constexpr bool slot_op = std::is_same_v<Kind, block::Store> ||
                                   std::is_same_v<Kind, block::Load> ||
                                   std::is_same_v<Kind, block::AddStored>;
          if constexpr (!slot_op) {
            if (!s.in_needs && s.weight < 0) {  // no weight below this block: no gradient
              back.g = at::Tensor();
              return;
            }
            TORCH_CHECK(back.g.defined(), "net: a block's gradient is missing (graph order)");
          }
          back.run(blk, s);
        },
        *s.block);
  }
  return {at::scalar_tensor(loss, x.options().dtype(at::kDouble)),
          at::scalar_tensor(hits, x.options().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnlab, m) {
  using torch::arg;
  cnnlab::register_program(m)
      .def("logits",
           [](const c10::intrusive_ptr<Program>& self, const at::Tensor& x,
              at::TensorList weights, at::TensorList state) {
             RECORD_FUNCTION("cnnlab::net_logits", std::vector<c10::IValue>());
             at::AutoDispatchBelowADInplaceOrView below_autograd;
             return net_logits(x, *self, weights, state);
           },
           "", {arg("x"), arg("weights"), arg("state")})
      .def("gradients",
           [](const c10::intrusive_ptr<Program>& self, const at::Tensor& x, const at::Tensor& y,
              at::TensorList weights, at::TensorList grads, at::TensorList masks,
              at::TensorList state, int64_t denom) {
             RECORD_FUNCTION("cnnlab::net_gradients", std::vector<c10::IValue>());
             std::tuple<at::Tensor, at::Tensor> out;
             {
               at::AutoDispatchBelowADInplaceOrView below_autograd;
               out = net_gradients(x, y, *self, weights, grads, masks, state, denom);
             }
             for (const at::Tensor& t : grads) torch::autograd::impl::bump_version(t);
             for (const at::Tensor& t : state) torch::autograd::impl::bump_version(t);
             return out;
           },
           "",
           {arg("x"), arg("y"), arg("weights"), arg("grads"), arg("masks"), arg("state"),
            arg("denom")});
}
