// A whole network's training step (forward, softmax cross-entropy, backward) composed from
// its blocks, as cnnlab/engine/blocks.py describes them in `plan`: one call from Python per
// step instead of a few dozen. Each block is one of
//
//   kConv  ph pw : Conv2D('valid', stride 1, bias, relu) + MaxPooling2D(2x2), ReLU after the
//                  pooling, the pooled size [0, ph) x [0, pw) (blocks.cpp); weights w, b
//   kFlatten     : (N, H, W, C) -> (N, H*W*C), Keras' (H, W, C) order: a view
//   kDropout     : times the next mask (nn.Dropout's draws, made by the caller), in training
//   kDense relu  : x @ w.T + b, then ReLU if relu; weights w, b
//   kGap         : (N, H, W, C) -> (N, C), the mean over H*W
//
// Maps are channels-last (N, H, W, C). The dense layers are MKL's matrix products; ReLU,
// dropout and the loss are loops here. Same float32 operations as PyTorch's, in other
// summation orders (no -ffast-math).

#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "blocks.h"

namespace {

using cnnlab::mutant;

enum Kind : int64_t { kConv = 0, kFlatten = 1, kDropout = 2, kDense = 3, kGap = 4 };

inline float relu(float v) { return v < 0.0f ? 0.0f : v; }  // NaN and -0.0 pass, as torch.relu

struct Saved {
  int64_t kind = 0;
  at::Tensor in, out, mask;
  cnnlab::PoolOut pool;
  std::vector<int64_t> shape;  // a map's (N, H, W, C) before flatten or global pooling
  bool relu = false;
  int64_t weight = -1;  // index of the block's first weight tensor
};

struct Forward {
  at::Tensor out;
  std::vector<Saved> saved;
};

Forward forward(const at::Tensor& x, at::IntArrayRef plan, at::TensorList weights,
                at::TensorList masks, bool train) {
  Forward f;
  at::Tensor h = x;
  size_t wi = 0, mi = 0;
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
        s.relu = plan[p++] != 0;
        TORCH_CHECK(wi + 2 <= weights.size(), "net: too few weight tensors for the plan");
        TORCH_CHECK(h.dim() == 2, "net: a dense layer needs flat (N, F) inputs");
        s.weight = static_cast<int64_t>(wi);
        s.in = h;
        h = at::addmm(weights[wi + 1], h, weights[wi].t());
        wi += 2;
        if (s.relu) {
          float* hp = h.data_ptr<float>();
          for (int64_t i = 0; i < h.numel(); ++i) hp[i] = relu(hp[i]);
        }
        s.out = h;
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
  f.out = h;
  return f;
}

void check(const at::Tensor& x, at::TensorList weights) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(),
              "net: inputs must be contiguous (N, H, W, C) on the CPU");
  for (const auto& w : weights) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.device().is_cpu(),
                "net: weights must be contiguous float32 on the CPU");
  }
}

// Evaluation-mode logits (no dropout): (N, H, W, C) -> (N, classes).
at::Tensor net_logits(const at::Tensor& x, at::IntArrayRef plan, at::TensorList weights) {
  check(x, weights);
  at::NoGradGuard no_grad;
  return forward(x, plan, weights, {}, false).out;
}

// Writes d(sum of losses / denom)/d(weights) into grads (the weights' shapes); returns the
// sum of the softmax cross-entropy losses (float64) and the correct predictions (int64).
std::tuple<at::Tensor, at::Tensor> net_gradients(const at::Tensor& x, const at::Tensor& y,
                                                 at::IntArrayRef plan, at::TensorList weights,
                                                 at::TensorList grads, at::TensorList masks,
                                                 int64_t denom) {
  check(x, weights);
  const int64_t n = x.size(0);
  TORCH_CHECK(grads.size() == weights.size(), "net: one gradient tensor per weight tensor");
  TORCH_CHECK(y.scalar_type() == at::kLong && y.dim() == 1 && y.size(0) == n,
              "net: labels must be int64 (N,)");
  at::NoGradGuard no_grad;
  Forward f = forward(x, plan, weights, masks, true);
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
        if (s.relu) {  // relu'(h): h > 0
          const float* hp = s.out.data_ptr<float>();
          float* q = g.data_ptr<float>();
          for (int64_t i = 0; i < g.numel(); ++i) q[i] = hp[i] > 0.0f ? q[i] : 0.0f;
        }
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
      default:
        break;
    }
  }
  return {at::scalar_tensor(loss, x.options().dtype(at::kDouble)),
          at::scalar_tensor(hits, x.options().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnlab, m) {
  m.def("net_logits(Tensor x, int[] plan, Tensor[] weights) -> Tensor");
  m.def(
      "net_gradients(Tensor x, Tensor y, int[] plan, Tensor[] weights, Tensor(a!)[] grads, "
      "Tensor[] masks, int denom) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnlab, CPU, m) {
  m.impl("net_logits", &net_logits);
  m.impl("net_gradients", &net_gradients);
}
