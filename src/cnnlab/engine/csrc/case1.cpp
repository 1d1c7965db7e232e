// Case 1's forward and backward pass on the CPU, with the small layers fused into single
// passes over memory. Built and loaded by cnnlab/native.py; the same arithmetic as
// cnnlab/fastcase1.py (which is the reference these kernels are tested against).
//
// Shapes for a batch of N, every map channels-last:
//   image (N, 28, 28) float32 or uint8 (scaled by 1/255 here, as data.scale does)
//   -> conv1 3x3, 1->16, only the 24x24 outputs that reach pool1 -> 2x2 max pool -> ReLU
//   -> a1 (N, 12, 12, 16) -> conv2 3x3, 16->64 (MKL-DNN) -> c2 (N, 10, 10, 64)
//   -> 2x2 max pool -> ReLU -> f (N, 5, 5, 64) = (N, 1600), Keras' (H, W, C) flatten
//   -> dropout (mask m1) -> dense 1600->32 + ReLU -> dropout (mask m2) -> dense 32->10.
//
// conv1, the poolings, the ReLUs, the dropout products, the softmax cross-entropy and
// their backward passes are loops written here: each is one pass over a few hundred KB
// where PyTorch would run several operations, each with its own dispatch and temporary.
// conv2's backward pass is summed over its nonzero output gradients only. The dense
// layers and conv2's forward pass stay with MKL and MKL-DNN. No -ffast-math: the loops do
// IEEE float32 arithmetic, in a summation order that differs from MKL's only in rounding.
//
// Ops (torch.ops.cnnlab.*): case1_logits, case1_gradients, dropout_mask (PyTorch's CPU
// dropout draws, replayed bit for bit) and adam_step (torch.optim.Adam's update).

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/TransformationHelper.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <vector>

#include "vec16.h"

namespace {

using namespace cnnlab;  // NOLINT: the vector helpers of vec16.h

constexpr int64_t kSide = 28;              // image side
constexpr int64_t kC1 = 16;                // conv1 filters
constexpr int64_t kP1 = 12;                // pool1 output side
constexpr int64_t kC2 = 64;                // conv2 filters
constexpr int64_t kH2 = 10;                // conv2 output side (of the 12x12 input)
constexpr int64_t kP2 = 5;                 // pool2 output side
constexpr int64_t kFeat = kP2 * kP2 * kC2;  // 1600
constexpr int64_t kHidden = 32;
constexpr int64_t kClasses = 10;

inline float pixel(float v) { return v; }
inline float pixel(uint8_t v) { return static_cast<float>(v) / 255.0f; }

template <typename T>
void load_image(const T* src, float* img) {
  for (int64_t i = 0; i < kSide * kSide; ++i) img[i] = pixel(src[i]);
}

inline float relu(float v) { return v < 0.0f ? 0.0f : v; }  // NaN and -0.0 pass, as torch.relu

// image -> conv1 -> pool -> ReLU: a1 (N, 12, 12, 16) and the pooling positions i1.
template <typename T>
void conv1_forward(const T* x, const float* w1t, const float* b1, float* a1, uint8_t* i1,
                   int64_t n) {
  f16v w[9];
  for (int k = 0; k < 9; ++k) w[k] = load16(w1t + k * kC1);
  const f16v bias = load16(b1);
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    float img[kSide * kSide];
    for (int64_t i = begin; i < end; ++i) {
      load_image(x + i * kSide * kSide, img);
      for (int64_t py = 0; py < kP1; ++py) {
        for (int64_t px = 0; px < kP1; ++px) {
          f16v best{};
          i16v arg{};
          for (int d = 0; d < 4; ++d) {
            const float* at = img + (2 * py + (d >> 1)) * kSide + 2 * px + (d & 1);
            f16v acc = bias;
            for (int k = 0; k < 9; ++k) acc += w[k] * at[(k / 3) * kSide + k % 3];
            if (d == 0) {
              best = acc;
            } else {
              pool_take(acc, d, best, arg);
            }
          }
          const int64_t o = ((i * kP1 + py) * kP1 + px) * kC1;
          store16(a1 + o, relu16(best));
          if (i1 != nullptr) store_arg(i1 + o, arg);
        }
      }
    }
  });
}

// conv1's weight and bias gradients from ga1 = dL/da1: through the ReLU (a1 > 0), to the
// pooled position, times the image pixels under the kernel. Per-thread sums, then added.
template <typename T>
void conv1_backward(const T* x, const float* ga1, const float* a1, const uint8_t* i1,
                    float* gw1, float* gb1, int64_t n) {
  const int threads = at::get_num_threads();
  std::vector<float> part(static_cast<size_t>(threads) * 10 * kC1, 0.0f);  // 9 taps + bias
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    f16v acc[10] = {};
    float img[kSide * kSide];
    for (int64_t i = begin; i < end; ++i) {
      load_image(x + i * kSide * kSide, img);
      for (int64_t py = 0; py < kP1; ++py) {
        for (int64_t px = 0; px < kP1; ++px) {
          const int64_t o = ((i * kP1 + py) * kP1 + px) * kC1;
          const f16v g = load16(a1 + o) > 0.0f ? load16(ga1 + o) : f16v{};
          const i16v arg = load_arg(i1 + o);
          acc[9] += g;
          for (int d = 0; d < 4; ++d) {
            const float* at = img + (2 * py + (d >> 1)) * kSide + 2 * px + (d & 1);
            const f16v gd = arg == d ? g : f16v{};
            for (int k = 0; k < 9; ++k) acc[k] += gd * at[(k / 3) * kSide + k % 3];
          }
        }
      }
    }
    float* mine = part.data() + at::get_thread_num() * 10 * kC1;
    for (int k = 0; k < 10; ++k) store16(mine + k * kC1, load16(mine + k * kC1) + acc[k]);
  });
  for (int64_t c = 0; c < kC1; ++c) {
    float b = 0.0f;
    for (int t = 0; t < threads; ++t) b += part[(t * 10 + 9) * kC1 + c];
    gb1[c] = b;
    for (int64_t k = 0; k < 9; ++k) {
      float w = 0.0f;
      for (int t = 0; t < threads; ++t) w += part[(t * 10 + k) * kC1 + c];
      gw1[c * 9 + k] = w;  // (16, 1, 3, 3)
    }
  }
}

// c2 (N, 10, 10, 64) -> pool -> ReLU: f (N, 1600) and the pooling positions i2.
void pool2_forward(const float* c2, float* f, uint8_t* i2, int64_t n) {
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t py = 0; py < kP2; ++py) {
        for (int64_t px = 0; px < kP2; ++px) {
          const int64_t o = ((i * kP2 + py) * kP2 + px) * kC2;
          for (int64_t c = 0; c < kC2; c += 16) {
            f16v best{};
            i16v arg{};
            for (int d = 0; d < 4; ++d) {
              const int64_t y = 2 * py + (d >> 1), xx = 2 * px + (d & 1);
              const f16v v = load16(c2 + ((i * kH2 + y) * kH2 + xx) * kC2 + c);
              if (d == 0) {
                best = v;
              } else {
                pool_take(v, d, best, arg);
              }
            }
            store16(f + o + c, relu16(best));
            if (i2 != nullptr) store_arg(i2 + o + c, arg);
          }
        }
      }
    }
  });
}

// conv2's backward pass from g2 = dL/d(pooled c2) (N, 25 windows, 64 channels) and the
// pooling positions i2. dL/dc2 is g2 at one position per window and channel and zero at
// the other three, so the weight, bias and input gradients are sums over the nonzero
// entries of g2 alone: a quarter of c2's positions at most, fewer after ReLU and dropout.
// (MKL-DNN's backward convolution multiplies the whole, mostly zero, dL/dc2.)
void conv2_backward(const float* g2, const uint8_t* i2, const float* a1, const float* w2c,
                    float* gw2, float* gb2, float* ga1, int64_t n) {
  constexpr int64_t windows = kP2 * kP2, taps = 9 * kC1;  // w2c: the kernel as (64, 3, 3, 16)
  // input gradient: one image per task
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      float* gi = ga1 + i * kP1 * kP1 * kC1;
      std::fill(gi, gi + kP1 * kP1 * kC1, 0.0f);
      for (int64_t w = 0; w < windows; ++w) {
        // this window's nonzero gradients, by pooled position, gathered without branches
        float val[4][kC2];
        int32_t chan[4][kC2];
        int count[4] = {0, 0, 0, 0};
        const int64_t j0 = (i * windows + w) * kC2;
        for (int64_t o = 0; o < kC2; ++o) {
          const int d = i2[j0 + o];
          val[d][count[d]] = g2[j0 + o];
          chan[d][count[d]] = static_cast<int32_t>(o);
          count[d] += g2[j0 + o] != 0.0f;
        }
        for (int d = 0; d < 4; ++d) {
          if (count[d] == 0) continue;
          f16v back[9] = {};  // sum over channels of g * kernel, in registers
          for (int e = 0; e < count[d]; ++e) {
            const float* wk = w2c + chan[d][e] * taps;
            for (int k = 0; k < 9; ++k) back[k] += val[d][e] * load16(wk + k * kC1);
          }
          const int64_t at = ((2 * (w / kP2) + (d >> 1)) * kP1 + 2 * (w % kP2) + (d & 1)) * kC1;
          for (int k = 0; k < 9; ++k) {
            float* dst = gi + at + ((k / 3) * kP1 + k % 3) * kC1;
            store16(dst, load16(dst) + back[k]);
          }
        }
      }
    }
  });
  // kernel (64, 16, 3, 3) and bias: one output channel per task, its sums in registers
  // (every window, zeros included: no unpredictable branch, no memory round trips)
  at::parallel_for(0, kC2, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      f16v acc[9] = {};
      float bias = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float* ai = a1 + i * kP1 * kP1 * kC1;
        for (int64_t w = 0; w < windows; ++w) {
          const int64_t j = (i * windows + w) * kC2 + o;
          const float g = g2[j];
          const int d = i2[j];
          const int64_t at = ((2 * (w / kP2) + (d >> 1)) * kP1 + 2 * (w % kP2) + (d & 1)) * kC1;
          bias += g;
          for (int k = 0; k < 9; ++k) acc[k] += g * load16(ai + at + ((k / 3) * kP1 + k % 3) * kC1);
        }
      }
      gb2[o] = bias;
      for (int k = 0; k < 9; ++k) {
        for (int64_t c = 0; c < kC1; ++c) gw2[(o * kC1 + c) * 9 + k] = acc[k][c];
      }
    }
  });
}

at::Tensor channels_last_view(const at::Tensor& t, int64_t side, int64_t channels) {
  // (N, side, side, C) contiguous, seen as (N, C, side, side) in channels-last memory
  return t.view({t.size(0), side, side, channels}).permute({0, 3, 1, 2});
}

struct Features {
  at::Tensor a1, i1, c2, f, i2;
};

Features features(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                  const at::Tensor& w2c, const at::Tensor& b2, bool keep_indices) {
  const int64_t n = x.size(0);
  auto opts = x.options().dtype(at::kFloat);
  auto bytes = x.options().dtype(at::kByte);
  Features r;
  at::Tensor w1t = w1.reshape({kC1, 9}).t().contiguous();  // (9, 16)
  r.a1 = at::empty({n, kP1, kP1, kC1}, opts);
  if (keep_indices) r.i1 = at::empty({n, kP1, kP1, kC1}, bytes);
  uint8_t* i1 = keep_indices ? r.i1.data_ptr<uint8_t>() : nullptr;
  if (x.scalar_type() == at::kByte) {
    conv1_forward(x.data_ptr<uint8_t>(), w1t.data_ptr<float>(), b1.data_ptr<float>(),
                  r.a1.data_ptr<float>(), i1, n);
  } else {
    conv1_forward(x.data_ptr<float>(), w1t.data_ptr<float>(), b1.data_ptr<float>(),
                  r.a1.data_ptr<float>(), i1, n);
  }
  r.c2 = at::conv2d(channels_last_view(r.a1, kP1, kC1), w2c, b2)
             .contiguous(at::MemoryFormat::ChannelsLast);  // (N, 64, 10, 10), a no-op copy
  r.f = at::empty({n, kFeat}, opts);
  if (keep_indices) r.i2 = at::empty({n, kFeat}, bytes);
  pool2_forward(r.c2.data_ptr<float>(), r.f.data_ptr<float>(),
                keep_indices ? r.i2.data_ptr<uint8_t>() : nullptr, n);
  return r;
}

void check_inputs(const at::Tensor& x, at::TensorList weights) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 3 && x.size(1) == kSide && x.size(2) == kSide,
              "case1 kernels: images must be (N, 28, 28) on the CPU");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kByte,
              "case1 kernels: images must be float32 or uint8");
  TORCH_CHECK(x.is_contiguous(), "case1 kernels: images must be contiguous");
  TORCH_CHECK(weights.size() == 8, "case1 kernels: 8 weight tensors expected");
  for (const auto& w : weights) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.is_contiguous() && w.device().is_cpu(),
                "case1 kernels: weights must be contiguous float32 on the CPU");
  }
}

// Evaluation-mode logits (no dropout): (N, 28, 28) -> (N, 10).
at::Tensor case1_logits(const at::Tensor& x, at::TensorList weights) {
  check_inputs(x, weights);
  at::NoGradGuard no_grad;
  const auto& w3 = weights[4];
  const auto& w4 = weights[6];
  Features r = features(x, weights[0], weights[1],
                        weights[2].contiguous(at::MemoryFormat::ChannelsLast), weights[3], false);
  return at::addmm(weights[7], at::addmm(weights[5], r.f, w3.t()).relu_(), w4.t());
}

// Writes d(sum of losses / denom)/d(weights) into grads (the weights' shapes); returns the
// sum of the losses (float64) and the number of correct predictions (int64).
std::tuple<at::Tensor, at::Tensor> case1_gradients(const at::Tensor& x, const at::Tensor& y,
                                                   at::TensorList weights, at::TensorList grads,
                                                   const at::Tensor& m1, const at::Tensor& m2,
                                                   int64_t denom) {
  check_inputs(x, weights);
  TORCH_CHECK(grads.size() == 8, "case1 kernels: 8 gradient tensors expected");
  const int64_t n = x.size(0);
  TORCH_CHECK(y.scalar_type() == at::kLong && y.dim() == 1 && y.size(0) == n,
              "case1 kernels: labels must be int64 (N,)");
  TORCH_CHECK(m1.sizes() == at::IntArrayRef({n, kFeat}) && m1.is_contiguous() &&
                  m2.sizes() == at::IntArrayRef({n, kHidden}) && m2.is_contiguous(),
              "case1 kernels: dropout masks must be (N, 1600) and (N, 32), contiguous");
  at::NoGradGuard no_grad;
  const auto &w1 = weights[0], &b1 = weights[1], &w2 = weights[2], &b2 = weights[3];
  const auto &w3 = weights[4], &b3 = weights[5], &w4 = weights[6], &b4 = weights[7];
  at::Tensor w2c = w2.contiguous(at::MemoryFormat::ChannelsLast);
  Features r = features(x, w1, b1, w2c, b2, true);

  at::Tensor d1 = r.f * m1;                                  // (N, 1600)
  at::Tensor h = at::addmm(b3, d1, w3.t());                   // (N, 32), before ReLU
  at::Tensor d2 = at::empty_like(h);
  float* hp = h.data_ptr<float>();
  const float* m2p = m2.data_ptr<float>();
  float* d2p = d2.data_ptr<float>();
  for (int64_t i = 0; i < n * kHidden; ++i) {
    hp[i] = relu(hp[i]);
    d2p[i] = hp[i] * m2p[i];
  }
  at::Tensor logits = at::addmm(b4, d2, w4.t());  // (N, 10)

  // softmax cross-entropy; g = (softmax - one-hot) / denom
  at::Tensor g = at::empty_like(logits);
  const float* lp = logits.data_ptr<float>();
  const int64_t* yp = y.data_ptr<int64_t>();
  float* gp = g.data_ptr<float>();
  double loss = 0.0;
  int64_t hits = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = lp + i * kClasses;
    const int64_t label = yp[i];
    TORCH_CHECK(label >= 0 && label < kClasses, "case1 kernels: label out of range");
    int64_t arg = 0;
    for (int64_t k = 1; k < kClasses; ++k) {
      if (row[k] > row[arg]) arg = k;
    }
    hits += arg == label;
    const float mx = row[arg];
    float s = 0.0f;
    for (int64_t k = 0; k < kClasses; ++k) s += std::exp(row[k] - mx);
    const float lse = std::log(s);
    loss -= static_cast<double>(row[label] - mx - lse);
    for (int64_t k = 0; k < kClasses; ++k) {
      const float p = std::exp(row[k] - mx - lse);
      gp[i * kClasses + k] = ((k == label ? p - 1.0f : p)) / static_cast<float>(denom);
    }
  }

  const auto &gw1 = grads[0], &gb1 = grads[1], &gw2 = grads[2], &gb2 = grads[3];
  const auto &gw3 = grads[4], &gb3 = grads[5], &gw4 = grads[6], &gb4 = grads[7];
  at::mm_out(const_cast<at::Tensor&>(gw4), g.t(), d2);
  at::sum_out(const_cast<at::Tensor&>(gb4), g, {0});
  // gh = (g @ w4) * m2 * relu'(h)
  at::Tensor gh = at::mm(g, w4);
  float* ghp = gh.data_ptr<float>();
  for (int64_t i = 0; i < n * kHidden; ++i) ghp[i] = hp[i] > 0.0f ? ghp[i] * m2p[i] : 0.0f;
  at::mm_out(const_cast<at::Tensor&>(gw3), gh.t(), d1);
  at::sum_out(const_cast<at::Tensor&>(gb3), gh, {0});
  at::Tensor g2 = at::mm(gh, w3);  // (N, 1600): dL/d(dropped features), then dL/df
  float* g2p = g2.data_ptr<float>();
  const float* m1p = m1.data_ptr<float>();
  const float* fp = r.f.data_ptr<float>();
  for (int64_t i = 0; i < n * kFeat; ++i) g2p[i] = fp[i] > 0.0f ? g2p[i] * m1p[i] : 0.0f;
  at::Tensor ga1c = at::empty({n, kP1, kP1, kC1}, x.options().dtype(at::kFloat));
  conv2_backward(g2p, r.i2.data_ptr<uint8_t>(), r.a1.data_ptr<float>(), w2c.data_ptr<float>(),
                 gw2.data_ptr<float>(), gb2.data_ptr<float>(), ga1c.data_ptr<float>(), n);
  if (x.scalar_type() == at::kByte) {
    conv1_backward(x.data_ptr<uint8_t>(), ga1c.data_ptr<float>(), r.a1.data_ptr<float>(),
                   r.i1.data_ptr<uint8_t>(), gw1.data_ptr<float>(), gb1.data_ptr<float>(), n);
  } else {
    conv1_backward(x.data_ptr<float>(), ga1c.data_ptr<float>(), r.a1.data_ptr<float>(),
                   r.i1.data_ptr<uint8_t>(), gw1.data_ptr<float>(), gb1.data_ptr<float>(), n);
  }
  return {at::scalar_tensor(loss, x.options().dtype(at::kDouble)),
          at::scalar_tensor(hits, x.options().dtype(at::kLong))};
}

// at::mt19937's next_state(): the MT19937 twist of all 624 words, in its order.
void mt_twist(uint32_t* s) {
  constexpr int n = 624, m = 397;
  auto twist = [](uint32_t u, uint32_t v) {
    return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? 0x9908b0dfu : 0u);
  };
  for (int i = 0; i < n - m; ++i) s[i] = s[i + m] ^ twist(s[i], s[i + 1]);
  for (int i = n - m; i < n - 1; ++i) s[i] = s[i + m - n] ^ twist(s[i], s[i + 1]);
  s[n - 1] = s[m - 1] ^ twist(s[n - 1], s[0]);
}

// `count` draws of at::mt19937::operator(), a block at a time; leaves the engine's state
// (words, left_, next_) exactly where that many single draws would.
void mt_draw(at::mt19937_data_pod& d, uint32_t* out, int64_t count) {
  for (int64_t done = 0; done < count;) {
    if (d.left_ == 1) {  // the next draw would twist first
      mt_twist(d.state_.data());
      d.left_ = 625;
      d.next_ = 0;
    }
    const int64_t k = std::min<int64_t>(d.left_ - 1, count - done);
    const uint32_t* s = d.state_.data() + d.next_;
    for (int64_t i = 0; i < k; ++i) {
      uint32_t y = s[i];
      y ^= y >> 11;
      y ^= (y << 7) & 0x9d2c5680u;
      y ^= (y << 15) & 0xefc60000u;
      y ^= y >> 18;
      out[done + i] = y;
    }
    d.left_ -= static_cast<int>(k);
    d.next_ += static_cast<uint32_t>(k);
    done += k;
  }
}

// The scaled mask nn.Dropout draws on a CPU, bit for bit: what bernoulli_(keep) gives a
// float32 tensor of `shape` (per element, in order, a uniform double made of two 32-bit
// draws of the default generator's MT19937, kept if below `keep`), times 1/keep. Drawn
// in blocks instead of one element at a time through TensorIterator: several times faster.
at::Tensor dropout_mask(at::IntArrayRef shape, double keep) {
  at::Tensor mask = at::empty(shape, at::kFloat);
  const int64_t count = mask.numel();
  float* m = mask.data_ptr<float>();
  const float scale = static_cast<float>(1.0 / keep);
  std::vector<uint32_t> bits(static_cast<size_t>(2 * count));
  auto* gen = at::check_generator<at::CPUGeneratorImpl>(at::detail::getDefaultCPUGenerator());
  {
    std::lock_guard<std::mutex> lock(gen->mutex_);
    at::mt19937 engine = gen->engine();
    at::mt19937_data_pod d = engine.data();
    mt_draw(d, bits.data(), 2 * count);
    engine.set_data(d);
    gen->set_engine(engine);
  }
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t word = (static_cast<uint64_t>(bits[2 * i]) << 32) | bits[2 * i + 1];
    const double u = at::transformation::uniform_real<double>(word, 0.0, 1.0);
    m[i] = at::transformation::bernoulli<double>(u, keep) ? scale : 0.0f;
  }
  return mask;
}

// Adam's update, as torch.optim.Adam's default implementation computes it in float32
// (lerp for the first moment, addcmul for the second, then sqrt(v) / sqrt(1 - beta2^t) +
// eps and addcdiv with -lr / (1 - beta1^t)), one pass over each tensor. `steps` are the
// optimiser's per-tensor step counts (float32 scalars), incremented here.
void adam_step(at::TensorList params, at::TensorList grads, at::TensorList exp_avgs,
               at::TensorList exp_avg_sqs, at::TensorList steps, double lr, double beta1,
               double beta2, double eps) {
  const size_t count = params.size();
  TORCH_CHECK(grads.size() == count && exp_avgs.size() == count &&
                  exp_avg_sqs.size() == count && steps.size() == count,
              "adam_step: lists of different lengths");
  for (size_t t = 0; t < count; ++t) {
    const at::Tensor& p = params[t];
    for (const at::Tensor* u : {&p, &grads[t], &exp_avgs[t], &exp_avg_sqs[t]}) {
      TORCH_CHECK(u->device().is_cpu() && u->scalar_type() == at::kFloat && u->is_contiguous() &&
                      u->numel() == p.numel(),
                  "adam_step: contiguous float32 CPU tensors of one size expected");
    }
    const at::Tensor& st = steps[t];
    TORCH_CHECK(st.numel() == 1 && st.scalar_type() == at::kFloat, "adam_step: float32 steps");
    float* step_ptr = st.data_ptr<float>();
    *step_ptr += 1.0f;
    const double step = *step_ptr;
    // the scalars as torch.optim.Adam passes them to its tensor ops: doubles, used as float
    const float w1 = static_cast<float>(1.0 - beta1);
    const float b2 = static_cast<float>(beta2);
    const float w2 = static_cast<float>(1.0 - beta2);
    const float bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, step)));
    const float neg_step_size = static_cast<float>(-(lr / (1.0 - std::pow(beta1, step))));
    const float epsf = static_cast<float>(eps);
    float* pp = p.data_ptr<float>();
    const float* gp = grads[t].data_ptr<float>();
    float* mp = exp_avgs[t].data_ptr<float>();
    float* vp = exp_avg_sqs[t].data_ptr<float>();
    // lerp's formula for weights below 0.5 (Adam's 1 - beta1 is 0.1)
    TORCH_CHECK(w1 < 0.5f, "adam_step: beta1 must be above 0.5");
    at::parallel_for(0, p.numel(), 16384, [=](int64_t begin, int64_t end) {
      float* __restrict pr = pp;  // four distinct tensors: lets the loop vectorise
      const float* __restrict gr = gp;
      float* __restrict mr = mp;
      float* __restrict vr = vp;
      for (int64_t i = begin; i < end; ++i) {
        const float g = gr[i];
        const float m = mr[i] + w1 * (g - mr[i]);
        const float v = vr[i] * b2 + w2 * g * g;
        const float denom = std::sqrt(v) / bc2_sqrt + epsf;
        mr[i] = m;
        vr[i] = v;
        pr[i] = pr[i] + neg_step_size * m / denom;
      }
    });
  }
}

}  // namespace

TORCH_LIBRARY(cnnlab, m) {
  m.def(
      "adam_step(Tensor(a!)[] params, Tensor[] grads, Tensor(b!)[] exp_avgs, "
      "Tensor(c!)[] exp_avg_sqs, Tensor(d!)[] steps, float lr, float beta1, float beta2, "
      "float eps) -> ()");
  m.def("dropout_mask(int[] shape, float keep) -> Tensor");
  m.def("case1_logits(Tensor x, Tensor[] weights) -> Tensor");
  m.def(
      "case1_gradients(Tensor x, Tensor y, Tensor[] weights, Tensor(a!)[] grads, Tensor m1, "
      "Tensor m2, int denom) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnlab, CPU, m) {
  m.impl("case1_logits", &case1_logits);
  m.impl("case1_gradients", &case1_gradients);
}

TORCH_LIBRARY_IMPL(cnnlab, CompositeExplicitAutograd, m) {
  m.impl("dropout_mask", &dropout_mask);
  m.impl("adam_step", &adam_step);
}
