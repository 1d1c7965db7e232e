// A whole network's training step (forward, softmax cross-entropy, backward) composed from
// its blocks, as cnnlab/engine/plan.py describes them: one call from Python per step instead
// of a few dozen. Each block is a kind number and its arguments:
//
//   kConv  ph pw     : Conv2D('valid', stride 1, bias, relu) + MaxPooling2D(2x2), ReLU after
//                      the pooling, the pooled size [0, ph) x [0, pw) (blocks.cpp); w, b
//   kFlatten         : (N, H, W, C) -> (N, H*W*C), Keras' (H, W, C) order: a view
//   kDropout         : times the next mask (nn.Dropout's draws, made by the caller), in training
//   kDense act       : x @ w.T + b, then the activation; w, b
//   kGap             : (N, H, W, C) -> (N, C), the mean over H*W
//   kConvNd sh sw dh dw top bottom left right act bias : any Conv2D (layers.cpp); w[, b]
//   kPool max kh kw sh sw top bottom left right relu   : max or average pooling
//   kAct act         : an activation
//   kNorm scale center eps momentum : BatchNormalization (eps, momentum: float64 bit
//                      patterns); [gamma][, beta]; two state tensors, the moving statistics
//   kGmp             : (N, H, W, C) -> (N, C), the maximum over H*W
//   kPad top bottom left right : zeros around each map (ZeroPadding2D, or a 'same'
//                      convolution's padding before a kConv block)
//   kScale scale offset : x * scale + offset (Rescaling; float64 bit patterns)
//
// Activations: 0 linear, 1 relu, 2 tanh, 3 sigmoid, 4 elu. Maps are channels-last
// (N, H, W, C). Same float32 operations as PyTorch's, in other summation orders (no
// -ffast-math).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "blocks.h"
#include "layers.h"

namespace {

using cnnlab::mutant;

enum Kind : int64_t {
  kConv = 0, kFlatten = 1, kDropout = 2, kDense = 3, kGap = 4,
  kConvNd = 5, kPool = 6, kAct = 7, kNorm = 8, kGmp = 9, kPad = 10, kScale = 11,
};

double as_double(int64_t bits) {  // a float64 passed through the int[] plan, bit for bit
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

cnnlab::Pads pads(at::IntArrayRef plan, size_t& p) {
  cnnlab::Pads r;
  r.top = plan[p++];
  r.bottom = plan[p++];
  r.left = plan[p++];
  r.right = plan[p++];
  return r;
}

struct Saved {
  int64_t kind = 0;
  at::Tensor in, out, mask;
  cnnlab::PoolOut pool;
  std::vector<int64_t> shape;  // a map's (N, H, W, C) before flatten or global pooling
  int64_t act = cnnlab::kLinear;
  int64_t weight = -1;  // index of the block's first weight tensor
  bool bias = false, scale = false, center = false;  // which weights the block has
  cnnlab::Cache cache;
  at::Tensor kernel;  // a convolution's (Cout, Cin, kh, kw) weights (a 1-D one's as kh = 1)
  cnnlab::ConvArgs conv;
  cnnlab::PoolArgs pooling;
  cnnlab::NormArgs norm;
  cnnlab::Pads zeros;  // kPad's padding
  double factor = 1.0;  // kScale's factor
};

at::Tensor take(at::TensorList weights, size_t& wi, bool has) {
  if (!has) return {};
  TORCH_CHECK(wi < weights.size(), "net: too few weight tensors for the plan");
  return weights[wi++];
}

struct Forward {
  at::Tensor out;
  std::vector<Saved> saved;
};

Forward forward(const at::Tensor& x, at::IntArrayRef plan, at::TensorList weights,
                at::TensorList masks, at::TensorList state, bool train) {
  Forward f;
  at::Tensor h = x;
  size_t wi = 0, mi = 0, si = 0;
  const int64_t n = x.size(0);
  for (size_t p = 0; p < plan.size();) {
    Saved s;
    s.kind = plan[p++];
    switch (s.kind) {
      case kConv: {
        const int64_t ph = plan[p++], pw = plan[p++];
        TORCH_CHECK(wi + 2 <= weights.size(), "net: too few weight tensors for the plan");
        s.weight = static_cast<int64_t>(wi);
        s.in = h;
        s.pool = cnnlab::conv_pool_relu_forward(h, weights[wi], weights[wi + 1], ph, pw, train);
        wi += 2;
        h = s.pool.a;
        break;
      }
      case kFlatten:
        s.shape = h.sizes().vec();
        h = h.reshape({n, -1});
        break;
      case kDropout:
        if (train) {
          TORCH_CHECK(mi < masks.size(), "net: too few dropout masks for the plan");
          s.mask = masks[mi++];
          TORCH_CHECK(s.mask.sizes() == h.sizes() && s.mask.is_contiguous(),
                      "net: a dropout mask is not shaped as its input");
          h = h * s.mask;
        }
        break;
      case kDense: {
        s.act = plan[p++];
        TORCH_CHECK(wi + 2 <= weights.size(), "net: too few weight tensors for the plan");
        TORCH_CHECK(h.dim() == 2, "net: a dense layer needs flat (N, F) inputs");
        s.weight = static_cast<int64_t>(wi);
        s.in = h;
        h = at::addmm(weights[wi + 1], h, weights[wi].t());
        wi += 2;
        cnnlab::activate_(h, s.act);
        s.out = h;
        break;
      }
      case kConvNd: {
        TORCH_CHECK(h.dim() == 4, "net: a convolution needs (N, H, W, C) maps");
        cnnlab::ConvArgs& c = s.conv;
        c.sh = plan[p++], c.sw = plan[p++], c.dh = plan[p++], c.dw = plan[p++];
        c.pads = pads(plan, p);
        c.act = plan[p++];
        s.bias = plan[p++] != 0;
        s.weight = static_cast<int64_t>(wi);
        const at::Tensor w = take(weights, wi, true), b = take(weights, wi, s.bias);
        s.kernel = w.dim() == 3 ? w.unsqueeze(2) : w;  // Conv1D: (Cout, Cin, 1, k)
        h = cnnlab::conv_forward(h, s.kernel, b, c, s.cache);
        break;
      }
      case kPool: {
        TORCH_CHECK(h.dim() == 4, "net: pooling needs (N, H, W, C) maps");
        cnnlab::PoolArgs& q = s.pooling;
        q.max = plan[p++] != 0;
        q.kh = plan[p++], q.kw = plan[p++], q.sh = plan[p++], q.sw = plan[p++];
        q.pads = pads(plan, p);
        q.relu = plan[p++] != 0;
        h = cnnlab::pool_forward(h, q, s.cache);
        break;
      }
      case kAct:
        s.act = plan[p++];
        h = h.clone();  // the input may be saved by the block before
        cnnlab::activate_(h, s.act);
        s.out = h;
        break;
      case kNorm: {
        TORCH_CHECK(h.dim() == 4, "net: batch normalisation runs here on (N, H, W, C) maps");
        s.scale = plan[p++] != 0;
        s.center = plan[p++] != 0;
        s.norm.eps = as_double(plan[p++]);
        s.norm.momentum = as_double(plan[p++]);
        TORCH_CHECK(si + 2 <= state.size(), "net: too few state tensors for the plan");
        if (s.scale || s.center) s.weight = static_cast<int64_t>(wi);
        const at::Tensor gamma = take(weights, wi, s.scale), beta = take(weights, wi, s.center);
        at::Tensor mean = state[si], var = state[si + 1];
        si += 2;
        h = cnnlab::batch_norm_forward(h, gamma, beta, mean, var, s.norm, s.cache, train);
        break;
      }
      case kGmp:
        TORCH_CHECK(h.dim() == 4, "net: global pooling needs (N, H, W, C) maps");
        h = cnnlab::global_max_forward(h, s.cache);
        break;
      case kScale:
        s.factor = as_double(plan[p++]);
        h = h * s.factor + as_double(plan[p++]);
        break;
      case kPad: {
        TORCH_CHECK(h.dim() == 4, "net: padding needs (N, H, W, C) maps");
        s.shape = h.sizes().vec();
        s.zeros = pads(plan, p);
        const cnnlab::Pads& q = s.zeros;
        h = at::constant_pad_nd(h, {0, 0, q.left, q.right, q.top, q.bottom}, 0);
        break;
      }
      case kGap:
        s.shape = h.sizes().vec();
        TORCH_CHECK(h.dim() == 4, "net: global pooling needs (N, H, W, C) maps");
        h = at::mean(h.view({n, s.shape[1] * s.shape[2], s.shape[3]}), {1});
        break;
      default:
        TORCH_CHECK(false, "net: unknown block kind ", s.kind);
    }
    f.saved.push_back(std::move(s));
  }
  TORCH_CHECK(wi == weights.size(), "net: more weight tensors than the plan uses");
  TORCH_CHECK(si == state.size(), "net: more state tensors than the plan uses");
  f.out = h;
  return f;
}

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

// Evaluation-mode logits (no dropout): (N, H, W, C) -> (N, classes).
at::Tensor net_logits(const at::Tensor& x, at::IntArrayRef plan, at::TensorList weights,
                      at::TensorList state) {
  check(x, weights, state);
  at::NoGradGuard no_grad;
  return forward(x, plan, weights, {}, state, false).out;
}

// Writes d(sum of losses / denom)/d(weights) into grads (the weights' shapes); returns the
// sum of the softmax cross-entropy losses (float64) and the correct predictions (int64).
std::tuple<at::Tensor, at::Tensor> net_gradients(const at::Tensor& x, const at::Tensor& y,
                                                 at::IntArrayRef plan, at::TensorList weights,
                                                 at::TensorList grads, at::TensorList masks,
                                                 at::TensorList state, int64_t denom) {
  check(x, weights, state);
  const int64_t n = x.size(0);
  TORCH_CHECK(grads.size() == weights.size(), "net: one gradient tensor per weight tensor");
  TORCH_CHECK(y.scalar_type() == at::kLong && y.dim() == 1 && y.size(0) == n,
              "net: labels must be int64 (N,)");
  at::NoGradGuard no_grad;
  Forward f = forward(x, plan, weights, masks, state, true);
  const at::Tensor logits = f.out.contiguous();
  TORCH_CHECK(logits.dim() == 2, "net: the plan must end in (N, classes) logits");
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
  for (int64_t b = static_cast<int64_t>(f.saved.size()) - 1; b >= first_weighted; --b) {
    Saved& s = f.saved[b];
    const bool below = b > first_weighted;  // a gradient is needed for this block's input
    switch (s.kind) {
      case kConv: {
        at::Tensor gw = grads[s.weight], gb = grads[s.weight + 1];
        g = cnnlab::conv_pool_relu_backward(g.contiguous(), s.pool, s.in, weights[s.weight], gw,
                                            gb, below);
        break;
      }
      case kFlatten:
        g = g.view(s.shape);
        break;
      case kDropout:
        if (mutant() != 4) g.mul_(s.mask);  // mutant 4: the mask left out of the backward pass
        break;
      case kDense: {
        g = cnnlab::activation_backward(g, s.out, s.act);
        at::Tensor gw = grads[s.weight], gb = grads[s.weight + 1];
        at::mm_out(gw, g.t(), s.in);
        at::sum_out(gb, g, {0});
        if (below) g = at::mm(g, weights[s.weight]);
        break;
      }
      case kGap: {
        const int64_t hw = s.shape[1] * s.shape[2];
        g = g.div(static_cast<double>(hw)).unsqueeze(1).expand({n, hw, s.shape[3]}).reshape(s.shape);
        break;
      }
      case kConvNd: {
        at::Tensor gw = grads[s.weight].view(s.kernel.sizes());  // writes through
        at::Tensor gb = s.bias ? grads[s.weight + 1] : at::Tensor();
        g = cnnlab::conv_backward(g, s.cache, s.kernel, s.conv, gw,
                                  s.bias ? &gb : nullptr, below);
        break;
      }
      case kPool:
        g = cnnlab::pool_backward(g.contiguous(), s.cache, s.pooling);
        break;
      case kAct:
        g = cnnlab::activation_backward(g, s.out, s.act);
        break;
      case kNorm: {
        const int64_t wg = s.weight, wb = s.weight + (s.scale ? 1 : 0);
        at::Tensor gg = s.scale ? grads[wg] : at::Tensor();
        at::Tensor gbeta = s.center ? grads[wb] : at::Tensor();
        g = cnnlab::batch_norm_backward(g.contiguous(), s.cache,
                                        s.scale ? weights[wg] : at::Tensor(), s.norm,
                                        s.scale ? &gg : nullptr, s.center ? &gbeta : nullptr,
                                        below);
        break;
      }
      case kGmp:
        g = cnnlab::global_max_backward(g, s.cache);
        break;
      case kScale:
        g = g * s.factor;
        break;
      case kPad:
        g = g.narrow(1, s.zeros.top, s.shape[1]).narrow(2, s.zeros.left, s.shape[2]).contiguous();
        break;
      default:
        break;
    }
  }
  return {at::scalar_tensor(loss, x.options().dtype(at::kDouble)),
          at::scalar_tensor(hits, x.options().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnlab, m) {
  m.def("net_logits(Tensor x, int[] plan, Tensor[] weights, Tensor[] state) -> Tensor");
  m.def(
      "net_gradients(Tensor x, Tensor y, int[] plan, Tensor[] weights, Tensor(a!)[] grads, "
      "Tensor[] masks, Tensor(b!)[] state, int denom) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnlab, CPU, m) {
  m.impl("net_logits", &net_logits);
  m.impl("net_gradients", &net_gradients);
}
