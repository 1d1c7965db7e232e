// The convolution block of the fast engine: Conv2D('valid', stride 1, bias, relu) followed
// by 2x2 max pooling, for any channel counts, map sizes and kernel sizes up to 7x7 (3x3 and
// 5x5 compiled as specialisations). Every map is channels-last; channels go 16 at a time
// (one AVX-512 register); where the count is not a multiple of 16, partial groups.
//
// Forward: with one input channel, the convolution is a loop here that computes each
// pooling window's four outputs in registers and keeps the maximum and its position; with
// more, MKL-DNN's convolution (at::conv2d) over the rows and columns that reach the pooling,
// then a pooling loop. ReLU after the pooling: relu(max(a)) == max(relu(a)) exactly.
// Backward: each pooled gradient reaches one window position, and none where the ReLU cut,
// so the weight, bias and input gradients are sums over those nonzero entries alone.
// No -ffast-math: IEEE float32, summed in an order that differs from MKL's only in rounding.

#include "blocks.h"

#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "f32x16.h"

namespace cnnlab {
namespace {

// Inputs reach the kernels as float32 network inputs: how stored pixels are scaled is decided
// once, in Python (cnnlab.data.scaling), never here.
inline float pixel(float v) { return v; }

struct Geom {
  int64_t n, h, w, cin, cout, kh, kw, ph, pw;
};

// Runs the call with KH, KW compiled in where the kernel size is a common one (0: any size up
// to kMaxTaps taps, read at run time), and F: whether the channel count is a multiple of 16.
#define CNNLAB_BY_SIZE(kh, kw, ...)    \
  if ((kh) == 3 && (kw) == 3) {        \
    constexpr int KH = 3, KW = 3;      \
    __VA_ARGS__;                       \
  } else if ((kh) == 5 && (kw) == 5) { \
    constexpr int KH = 5, KW = 5;      \
    __VA_ARGS__;                       \
  } else {                             \
    constexpr int KH = 0, KW = 0;      \
    __VA_ARGS__;                       \
  }
#define CNNLAB_BY_KERNEL(kh, kw, full, ...) \
  if (full) {                               \
    constexpr bool F = true;                \
    CNNLAB_BY_SIZE(kh, kw, __VA_ARGS__)     \
  } else {                                  \
    constexpr bool F = false;               \
    CNNLAB_BY_SIZE(kh, kw, __VA_ARGS__)     \
  }

// The taps a kernel has room for: KH * KW, or kMaxTaps for a size read at run time.
template <int KH, int KW>
struct MaxTaps {
  static constexpr int value = KH ? KH * KW : kMaxTaps;
};

inline int lanes(int64_t cout, int64_t c0) { return static_cast<int>(std::min<int64_t>(16, cout - c0)); }

// One input channel: image -> conv -> pool -> ReLU; a (N, ph, pw, Cout), idx the positions.
template <int KH, int KW, bool F, typename T>
void direct_forward(const Geom& g, const T* x, const float* wt, const float* b, float* a,
                    uint8_t* idx) {
  const int64_t kw = KW ? KW : g.kw, taps = KH ? KH * KW : g.kh * g.kw;
  const int64_t H = g.h, W = g.w, cout = g.cout;
  const int64_t used = taps - (mutant() == 1);  // mutant 1: the last tap left out
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(H * W);
    float* img = buf.data();
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t p = 0; p < H * W; ++p) img[p] = pixel(x[i * H * W + p]);
      for (int64_t c0 = 0; c0 < cout; c0 += 16) {
        const int nc = lanes(cout, c0);
        f32x16 wk[MaxTaps<KH, KW>::value];
        for (int64_t k = 0; k < taps; ++k) wk[k] = ld<F>(wt + k * cout + c0, nc);
        const f32x16 bias = ld<F>(b + c0, nc);
        for (int64_t py = 0; py < g.ph; ++py) {
          for (int64_t px = 0; px < g.pw; ++px) {
            f32x16 best{};
            i32x16 arg{};
            for (int d = 0; d < 4; ++d) {
              const float* at = img + (2 * py + (d >> 1)) * W + 2 * px + (d & 1);
              f32x16 acc = bias;
              for (int64_t k = 0; k < used; ++k) acc += wk[k] * at[(k / kw) * W + k % kw];
              if (d == 0) {
                best = acc;
              } else {
                pool_take(acc, d, best, arg);
              }
            }
            const int64_t o = ((i * g.ph + py) * g.pw + px) * cout + c0;
            st<F>(a + o, relu16(best), nc);
            if (idx != nullptr) st_arg<F>(idx + o, arg, nc);
          }
        }
      }
    }
  });
}

// One input channel: the weight and bias gradients from ga = dL/da, through the ReLU
// (a > 0) to the pooled position, times the image pixels under the kernel. Per-thread
// sums, added in thread order.
template <int KH, int KW, bool F, typename T>
void direct_backward(const Geom& g, const T* x, const float* ga, const float* a,
                     const uint8_t* idx, float* gw, float* gb) {
  const int64_t kw = KW ? KW : g.kw, taps = KH ? KH * KW : g.kh * g.kw;
  const int64_t H = g.h, W = g.w, cout = g.cout;
  const int64_t chunks = (cout + 15) / 16, slots = taps + 1;  // taps, then the bias
  const int threads = at::get_num_threads();
  std::vector<float> part(static_cast<size_t>(threads * chunks * slots * 16), 0.0f);
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(H * W);
    float* img = buf.data();
    float* mine = part.data() + at::get_thread_num() * chunks * slots * 16;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      const int64_t c0 = ch * 16;
      const int nc = lanes(cout, c0);
      f32x16 acc[MaxTaps<KH, KW>::value + 1] = {};
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t p = 0; p < H * W; ++p) img[p] = pixel(x[i * H * W + p]);
        for (int64_t py = 0; py < g.ph; ++py) {
          for (int64_t px = 0; px < g.pw; ++px) {
            const int64_t o = ((i * g.ph + py) * g.pw + px) * cout + c0;
            const f32x16 gv = ld<F>(a + o, nc) > 0.0f ? ld<F>(ga + o, nc) : f32x16{};
            const i32x16 arg = ld_arg<F>(idx + o, nc);
            acc[taps] += gv;
            for (int d = 0; d < 4; ++d) {
              const float* at = img + (2 * py + (d >> 1)) * W + 2 * px + (d & 1);
              const f32x16 gd = arg == d ? gv : f32x16{};
              for (int64_t k = 0; k < taps; ++k) acc[k] += gd * at[(k / kw) * W + k % kw];
            }
          }
        }
      }
      float* slot = mine + ch * slots * 16;
      for (int64_t k = 0; k < slots; ++k) store16(slot + k * 16, load16(slot + k * 16) + acc[k]);
    }
  });
  for (int64_t c = 0; c < cout; ++c) {
    const int64_t ch = c / 16, lane = c % 16;
    auto total = [&](int64_t k) {
      float s = 0.0f;
      for (int t = 0; t < threads; ++t) s += part[((t * chunks + ch) * slots + k) * 16 + lane];
      return s;
    };
    gb[c] = total(taps);
    for (int64_t k = 0; k < taps; ++k) gw[c * taps + k] = total(k);  // (Cout, 1, kh, kw)
  }
}

// conv output c (N, 2ph, 2pw, Cout) -> 2x2 max pool -> ReLU: a and the positions idx.
template <bool F>
void pool_relu(const Geom& g, const float* c, float* a, uint8_t* idx) {
  const int64_t oh = 2 * g.ph, ow = 2 * g.pw, cout = g.cout;
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t py = 0; py < g.ph; ++py) {
        for (int64_t px = 0; px < g.pw; ++px) {
          const int64_t o = ((i * g.ph + py) * g.pw + px) * cout;
          for (int64_t c0 = 0; c0 < cout; c0 += 16) {
            const int nc = lanes(cout, c0);
            f32x16 best{};
            i32x16 arg{};
            for (int d = 0; d < 4; ++d) {
              const int64_t y = 2 * py + (d >> 1), xx = 2 * px + (d & 1);
              const f32x16 v = ld<F>(c + ((i * oh + y) * ow + xx) * cout + c0, nc);
              if (d == 0) {
                best = v;
              } else if (mutant() == 3) {  // mutant 3: ties go to the last maximum
                const i32x16 take = v >= best;
                best = take ? v : best;
                arg = take ? i32x16{} + d : arg;
              } else {
                pool_take(v, d, best, arg);
              }
            }
            st<F>(a + o + c0, relu16(best), nc);
            if (idx != nullptr) st_arg<F>(idx + o + c0, arg, nc);
          }
        }
      }
    }
  });
}

// Several input channels: the backward pass from g = dL/da (overwritten with its product
// with relu'(a)) and the positions idx, over the nonzero gradients only. x (N, H, W, Cin); wc: the kernel as (Cout, kh, kw, Cin).
template <int KH, int KW, bool F>
void sparse_backward(const Geom& g, float* gr, const float* a, const uint8_t* idx,
                     const float* x, const float* wc, float* gw, float* gb, float* gx) {
  const int64_t kw = KW ? KW : g.kw, taps = KH ? KH * KW : g.kh * g.kw;
  const int64_t H = g.h, W = g.w, cin = g.cin, cout = g.cout, windows = g.ph * g.pw;
  // the input pixel under window win's position d, as an offset: a table, not a division
  // by the run-time pooled width in the inner loops
  std::vector<int64_t> base(windows);
  for (int64_t win = 0; win < windows; ++win) {
    base[win] = (2 * (win / g.pw) * W + 2 * (win % g.pw)) * cin;
  }
  const int64_t* bp = base.data();
  const int64_t step[4] = {0, cin, W * cin, (W + 1) * cin};
  auto corner = [bp, step](int64_t win, int d) { return bp[win] + step[d]; };
  // the gradient through the ReLU, in place, once: the loops below read it with a stride
  // of Cout, where a second strided read (of a) made the weight gradient's pass slower
  float* gm = gr;
  for (int64_t j = 0; j < g.n * windows * cout; ++j) gm[j] = a[j] > 0.0f ? gm[j] : 0.0f;
  if (gx != nullptr) {  // input gradient: one image per task
    at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> val(4 * cout);
      std::vector<int32_t> chan(4 * cout);
      for (int64_t i = begin; i < end; ++i) {
        float* gi = gx + i * H * W * cin;
        std::fill(gi, gi + H * W * cin, 0.0f);
        for (int64_t win = 0; win < windows; ++win) {
          // this window's nonzero gradients, by pooled position, gathered without branches
          int count[4] = {0, 0, 0, 0};
          const int64_t j0 = (i * windows + win) * cout;
          for (int64_t o = 0; o < cout; ++o) {
            const int d = idx[j0 + o];
            const float gv = gm[j0 + o];
            val[d * cout + count[d]] = gv;
            chan[d * cout + count[d]] = static_cast<int32_t>(o);
            count[d] += gv != 0.0f;
          }
          for (int d = 0; d < 4; ++d) {
            const int used = count[d] - (mutant() == 2 && count[d] > 0);  // 2: one term lost
            if (used <= 0) continue;
            const int64_t at = corner(win, d);
            for (int64_t c0 = 0; c0 < cin; c0 += 16) {
              const int nc = lanes(cin, c0);
              f32x16 back[MaxTaps<KH, KW>::value] = {};  // sum over output channels of g * kernel, in registers
              for (int e = 0; e < used; ++e) {
                const float* wk = wc + chan[d * cout + e] * taps * cin + c0;
                const float v = val[d * cout + e];
                for (int64_t k = 0; k < taps; ++k) back[k] += v * ld<F>(wk + k * cin, nc);
              }
              for (int64_t k = 0; k < taps; ++k) {
                float* dst = gi + at + ((k / kw) * W + k % kw) * cin + c0;
                st<F>(dst, ld<F>(dst, nc) + back[k], nc);
              }
            }
          }
        }
      }
    });
  }
  // kernel and bias: one output channel per task, its sums in registers (every window,
  // zeros included: no unpredictable branch, no memory round trips)
  at::parallel_for(0, cout, 1, [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      for (int64_t c0 = 0; c0 < cin; c0 += 16) {
        const int nc = lanes(cin, c0);
        f32x16 acc[MaxTaps<KH, KW>::value] = {};
        float bias = 0.0f;
        for (int64_t i = 0; i < g.n; ++i) {
          const float* xi = x + i * H * W * cin + c0;
          for (int64_t win = 0; win < windows; ++win) {
            const int64_t j = (i * windows + win) * cout + o;
            const float gv = gm[j];
            const int64_t at = corner(win, idx[j]);
            bias += gv;
            for (int64_t k = 0; k < taps; ++k) {
              acc[k] += gv * ld<F>(xi + at + ((k / kw) * W + k % kw) * cin, nc);
            }
          }
        }
        if (c0 == 0) gb[o] = bias;
        for (int64_t k = 0; k < taps; ++k) {
          for (int c = 0; c < nc; ++c) gw[(o * cin + c0 + c) * taps + k] = acc[k][c];
        }
      }
    }
  });
}

Geom geometry(const at::Tensor& x, const at::Tensor& w, int64_t ph, int64_t pw) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(),
              "conv_pool_relu: x must be a contiguous (N, H, W, C) CPU tensor");
  TORCH_CHECK(w.dim() == 4 && w.scalar_type() == at::kFloat && w.device().is_cpu(),
              "conv_pool_relu: w must be a float32 (Cout, Cin, kh, kw) CPU tensor");
  Geom g{x.size(0), x.size(1), x.size(2), x.size(3), w.size(0), w.size(2), w.size(3), ph, pw};
  TORCH_CHECK(w.size(1) == g.cin, "conv_pool_relu: the kernel's input channels are not x's");
  TORCH_CHECK(g.kh * g.kw <= kMaxTaps, "conv_pool_relu: kernels up to ", kMaxTaps, " taps");
  TORCH_CHECK(ph >= 1 && pw >= 1 && 2 * ph + g.kh - 1 <= g.h && 2 * pw + g.kw - 1 <= g.w,
              "conv_pool_relu: the pooled size does not fit the input");
  TORCH_CHECK(x.scalar_type() == at::kFloat, "conv_pool_relu: x must be float32");
  return g;
}

}  // namespace

PoolOut conv_pool_relu_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                               int64_t ph, int64_t pw, bool keep_indices) {
  const Geom g = geometry(x, w, ph, pw);
  TORCH_CHECK(b.numel() == g.cout && b.is_contiguous() && b.scalar_type() == at::kFloat,
              "conv_pool_relu: b must be float32 (Cout,)");
  PoolOut r;
  r.a = at::empty({g.n, ph, pw, g.cout}, x.options().dtype(at::kFloat));
  if (keep_indices) r.idx = at::empty({g.n, ph, pw, g.cout}, x.options().dtype(at::kByte));
  uint8_t* idx = keep_indices ? r.idx.data_ptr<uint8_t>() : nullptr;
  float* a = r.a.data_ptr<float>();
  if (g.cin == 1) {
    const at::Tensor wt = w.reshape({g.cout, g.kh * g.kw}).t().contiguous();  // (taps, Cout)
    const float* wp = wt.data_ptr<float>();
    const float* bp = b.data_ptr<float>();
    CNNLAB_BY_KERNEL(g.kh, g.kw, g.cout % 16 == 0,
                     direct_forward<KH, KW, F>(g, x.data_ptr<float>(), wp, bp, a, idx));
    return r;
  }
  at::Tensor xin = x;  // only the rows and columns that reach the pooled outputs
  if (2 * ph + g.kh - 1 < g.h) xin = xin.narrow(1, 0, 2 * ph + g.kh - 1);
  if (2 * pw + g.kw - 1 < g.w) xin = xin.narrow(2, 0, 2 * pw + g.kw - 1);
  const at::Tensor c = at::conv2d(xin.permute({0, 3, 1, 2}), w.contiguous(at::MemoryFormat::ChannelsLast), b)
                           .contiguous(at::MemoryFormat::ChannelsLast);  // (N, 2ph, 2pw, Cout)
  if (g.cout % 16 == 0) {
    pool_relu<true>(g, c.data_ptr<float>(), a, idx);
  } else {
    pool_relu<false>(g, c.data_ptr<float>(), a, idx);
  }
  return r;
}

at::Tensor conv_pool_relu_backward(const at::Tensor& g, const PoolOut& out, const at::Tensor& x,
                                   const at::Tensor& w, at::Tensor& gw, at::Tensor& gb,
                                   bool input_grad) {
  const Geom geo = geometry(x, w, out.a.size(1), out.a.size(2));
  TORCH_CHECK(g.sizes() == out.a.sizes() && g.is_contiguous() && g.scalar_type() == at::kFloat,
              "conv_pool_relu_backward: g must be a contiguous float32 tensor like a");
  TORCH_CHECK(out.idx.defined() && out.idx.sizes() == out.a.sizes(),
              "conv_pool_relu_backward: the forward pass kept no pooling positions");
  TORCH_CHECK(gw.sizes() == w.sizes() && gw.is_contiguous() && gb.numel() == geo.cout,
              "conv_pool_relu_backward: gw and gb must be shaped as the weights");
  float* gr = g.data_ptr<float>();  // overwritten: g * relu'(a)
  const float* a = out.a.data_ptr<float>();
  const uint8_t* idx = out.idx.data_ptr<uint8_t>();
  at::Tensor gx;
  if (geo.cin == 1) {
    TORCH_CHECK(!input_grad, "conv_pool_relu_backward: no input gradient with one channel");
    float* gwp = gw.data_ptr<float>();
    float* gbp = gb.data_ptr<float>();
    CNNLAB_BY_KERNEL(geo.kh, geo.kw, geo.cout % 16 == 0,
                     direct_backward<KH, KW, F>(geo, x.data_ptr<float>(), gr, a, idx, gwp, gbp));
    return gx;
  }
  if (input_grad) gx = at::empty(x.sizes(), x.options());
  const at::Tensor wc = w.permute({0, 2, 3, 1}).contiguous();  // (Cout, kh, kw, Cin)
  float* gxp = input_grad ? gx.data_ptr<float>() : nullptr;
  CNNLAB_BY_KERNEL(geo.kh, geo.kw, geo.cin % 16 == 0,
                   sparse_backward<KH, KW, F>(geo, gr, a, idx, x.data_ptr<float>(),
                                           wc.data_ptr<float>(), gw.data_ptr<float>(),
                                           gb.data_ptr<float>(), gxp));
  return gx;
}

}  // namespace cnnlab

namespace {

std::tuple<at::Tensor, at::Tensor> conv_pool_relu_op(const at::Tensor& x, const at::Tensor& w,
                                                     const at::Tensor& b, int64_t ph, int64_t pw,
                                                     bool keep_indices) {
  at::NoGradGuard no_grad;
  cnnlab::PoolOut r = cnnlab::conv_pool_relu_forward(x, w.contiguous(), b.contiguous(), ph, pw,
                                                     keep_indices);
  return {r.a, keep_indices ? r.idx : at::empty({0}, x.options().dtype(at::kByte))};
}

// (dL/dx, or an empty tensor without input_grad; dL/dw; dL/db)
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_pool_relu_backward_op(
    const at::Tensor& g, const at::Tensor& a, const at::Tensor& idx, const at::Tensor& x,
    const at::Tensor& w, bool input_grad) {
  at::NoGradGuard no_grad;
  at::Tensor gw = at::empty(w.sizes(), w.options());
  at::Tensor gb = at::empty({w.size(0)}, w.options());
  at::Tensor gx = cnnlab::conv_pool_relu_backward(g.contiguous().clone(), {a, idx}, x, w.contiguous(),
                                                  gw, gb, input_grad);
  return {gx.defined() ? gx : at::empty({0}, w.options()), gw, gb};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnlab, m) {
  m.def("conv_pool_relu(Tensor x, Tensor w, Tensor b, int ph, int pw, bool keep) -> (Tensor, Tensor)");
  m.def(
      "conv_pool_relu_backward(Tensor g, Tensor a, Tensor idx, Tensor x, Tensor w, "
      "bool input_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnlab, CPU, m) {
  m.impl("conv_pool_relu", &conv_pool_relu_op);
  m.impl("conv_pool_relu_backward", &conv_pool_relu_backward_op);
}
