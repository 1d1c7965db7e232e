// BatchNormalization on channels-last maps (layers.h), with the ReLU and the max pooling that
// follow it fused into its loops. Unfused, the three layers sweep the map about nineteen
// times a step (statistics, normalised map, ReLU copy, pooling, and their backward passes,
// the pooling's zero-filled gradient among them); fused, forward reads the input twice and
// writes only the pooled map with each maximum's place in its window (uint8), and backward
// reads it twice (its sums, then the input gradient) and writes the input gradient once.
// Each loop takes 16 channels of a pixel at a time (f32x16.h).
//
// Statistics are per-channel sums in float64 (ATen's channels-last kernel loses digits in
// the variance: measured on ReLU maps, 1.5e-6 relative error; these sums, against float64 on
// fcn1d's maps, 3e-8 to 8e-8), taken in one sweep about a shift (each channel's first
// value), so that the variance does not cancel.

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "f32x16.h"
#include "layers.h"

namespace cnnlab {
namespace {

typedef float f32x8 __attribute__((vector_size(32)));
typedef double f64x8 __attribute__((vector_size(64)));

// 16 float64 sums, kept in registers over a block of rows: widen(v) adds v's 16 floats
struct Wide {
  f64x8 lo{}, hi{};
  void widen(f32x16 v) {
    lo += __builtin_convertvector(__builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7), f64x8);
    hi += __builtin_convertvector(__builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15),
                                  f64x8);
  }
  // acc[0, 16) += the sums
  void add_to(double* acc) const {
    f64x8 a, b;
    std::memcpy(&a, acc, sizeof a);
    std::memcpy(&b, acc + 8, sizeof b);
    a += lo;
    b += hi;
    std::memcpy(acc, &a, sizeof a);
    std::memcpy(acc + 8, &b, sizeof b);
  }
};

// Rows a sums' block takes: each group of 16 channels sweeps the block in turn, its sums in
// registers, so a block must stay in the caches (256 rows of 128 channels: 128 KiB)
constexpr int64_t kBlock = 256;

int64_t padded(int64_t c) { return (c + 15) / 16 * 16; }

// Two per-channel sums in float64 over items [0, items): add(first, end, acc) adds the terms
// of items [first, end) (at most kBlock) to acc[k] and acc[cp + k] (cp = c rounded up to 16);
// per-thread partial sums, added in thread order (the same every run).
template <typename F>
std::vector<double> channel_sums(int64_t items, int64_t c, const F& add) {
  const int threads = at::get_num_threads();
  const int64_t cp = padded(c);
  std::vector<double> part(static_cast<size_t>(threads * 2 * cp), 0.0);
  at::parallel_for(0, items, 64, [&](int64_t begin, int64_t end) {
    double* acc = part.data() + at::get_thread_num() * 2 * cp;
    for (int64_t q = begin; q < end; q += kBlock) add(q, std::min(end, q + kBlock), acc);
  });
  std::vector<double> total(static_cast<size_t>(2 * c), 0.0);
  for (int t = 0; t < threads; ++t) {
    for (int64_t k = 0; k < c; ++k) {
      total[k] += part[t * 2 * cp + k];
      total[c + k] += part[t * 2 * cp + cp + k];
    }
  }
  return total;
}

// The map's layout and the pooling's: (N, H, W, C) in, (N, OH, OW, C) out (OH = H / ph).
struct Geometry {
  int64_t n, h, w, c, ph, pw, oh, ow;
  Geometry(const at::Tensor& x, const NormArgs& a)
      : n(x.size(0)), h(x.size(1)), w(x.size(2)), c(x.size(3)), ph(a.ph), pw(a.pw),
        oh(x.size(1) / a.ph), ow(x.size(2) / a.pw) {}
  bool pooled() const { return ph * pw > 1; }
  // the input offset of each window cell dy * pw + dx from the window's first value
  std::vector<int64_t> cells() const {
    std::vector<int64_t> off;
    for (int64_t dy = 0; dy < ph; ++dy) {
      for (int64_t dx = 0; dx < pw; ++dx) off.push_back((dy * w + dx) * c);
    }
    return off;
  }
  // the input offset of pooled position q's window (q = (image * oh + i) * ow + j)
  int64_t window(int64_t q) const {
    const int64_t j = q % ow, i = (q / ow) % oh, image = q / (ow * oh);
    return ((image * h + i * ph) * w + j * pw) * c;
  }
};

// A (C) float32 tensor's values, zero-padded to cp: whole groups of 16 for load16
std::vector<float> padded_values(const at::Tensor& t, int64_t cp) {
  std::vector<float> out(static_cast<size_t>(cp), 0.0f);
  std::copy_n(t.data_ptr<float>(), t.numel(), out.begin());
  return out;
}

inline int lanes(int64_t c, int64_t k) { return static_cast<int>(std::min<int64_t>(16, c - k)); }

// Full: the channel count is a multiple of 16 (f32x16.h's whole-group loads and stores)
template <bool Full>
at::Tensor forward(const at::Tensor& input, const at::Tensor& gamma, const at::Tensor& beta,
                   at::Tensor& moving_mean, at::Tensor& moving_var, const NormArgs& a, Cache& cache,
                   bool train, const at::Tensor& residual) {
  const at::Tensor x = input.contiguous();
  const Geometry geo(x, a);
  const int64_t c = geo.c, cp = padded(c), rows = x.numel() / c;
  TORCH_CHECK(!geo.pooled() || (geo.oh >= 1 && geo.ow >= 1 && geo.ph * geo.pw <= 255),
              "net: batch normalisation's pooling window does not fit its map");
  const float* xp = x.data_ptr<float>();
  at::Tensor mean, invstd;
  if (!train) {
    mean = moving_mean.contiguous();
    invstd = at::rsqrt(moving_var + a.eps).contiguous();
  } else {
    TORCH_CHECK(rows >= 2, "net: batch normalisation needs two values per channel");
    // sums of d = x - x[0] and d * d; the float32 d is exact where x is near the shift
    const std::vector<double> sums = channel_sums(rows, c, [&](int64_t r0, int64_t r1,
                                                               double* acc) {
      for (int64_t k = 0; k < c; k += 16) {
        const int n = lanes(c, k);
        const f32x16 shift = ld<Full>(xp + k, n);
        Wide s1, s2;
        for (int64_t r = r0; r < r1; ++r) {
          const f32x16 d = ld<Full>(xp + r * c + k, n) - shift;
          s1.widen(d);
          s2.widen(d * d);
        }
        s1.add_to(acc + k);
        s2.add_to(acc + cp + k);
      }
    });
    mean = at::empty({c}, x.options());
    at::Tensor var = at::empty({c}, x.options());  // biased, as Keras
    const double count = static_cast<double>(rows);
    for (int64_t k = 0; k < c; ++k) {
      const double md = sums[k] / count;
      mean.data_ptr<float>()[k] = static_cast<float>(xp[k] + md);
      var.data_ptr<float>()[k] = static_cast<float>(std::max(sums[c + k] / count - md * md, 0.0));
    }
    invstd = at::rsqrt(var + a.eps);
    const double m = a.momentum;
    moving_mean.mul_(m).add_(mean, 1 - m);
    // mutant 7: the moving variance from the unbiased batch variance (PyTorch's, not Keras')
    const double unbias = mutant() == 7 ? count / (count - 1) : 1.0;
    moving_var.mul_(m).add_(var * unbias, 1 - m);
  }
  // y = (x - mean) * (invstd * gamma) + beta, per channel (padded to whole groups of 16)
  const std::vector<float> mv = padded_values(mean, cp);
  std::vector<float> sc = padded_values(invstd, cp);
  const std::vector<float> sh = beta.defined() ? padded_values(beta, cp) : std::vector<float>(cp);
  for (int64_t k = 0; k < c && gamma.defined(); ++k) sc[k] *= gamma.data_ptr<float>()[k];
  const bool relu = a.relu;
  auto norm = [&](const float* xr, int64_t k, int n) {
    return (ld<Full>(xr + k, n) - load16(mv.data() + k)) * load16(sc.data() + k) +
           load16(sh.data() + k);
  };
  at::Tensor y;
  if (!geo.pooled()) {
    y = at::empty_like(x);
    float* yp = y.data_ptr<float>();
    const at::Tensor res = residual.defined() ? residual.contiguous() : at::Tensor();
    TORCH_CHECK(!res.defined() || res.sizes() == x.sizes(),
                "net: an Add of maps of different shapes");
    const float* rp = res.defined() ? res.data_ptr<float>() : nullptr;
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t k = 0; k < c; k += 16) {
          const int n = lanes(c, k);
          f32x16 v = norm(xp + r * c, k, n);
          if (rp != nullptr) v += ld<Full>(rp + r * c + k, n);
          st<Full>(yp + r * c + k, relu ? relu16(v) : v, n);  // NaN passes, as torch's relu
        }
      }
    });
  } else {
    TORCH_CHECK(!residual.defined(), "net: a batch norm's Add with pooling");
    y = at::empty({geo.n, geo.oh, geo.ow, c}, x.options());
    at::Tensor win = at::empty({geo.n, geo.oh, geo.ow, c}, x.options().dtype(at::kByte));
    float* yp = y.data_ptr<float>();
    uint8_t* wp = win.data_ptr<uint8_t>();
    const std::vector<int64_t> off = geo.cells();
    at::parallel_for(0, geo.n * geo.oh * geo.ow, 16, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        const float* xw = xp + geo.window(q);
        for (int64_t k = 0; k < c; k += 16) {
          const int n = lanes(c, k);
          f32x16 best = norm(xw, k, n);
          i32x16 arg{};
          for (size_t cell = 1; cell < off.size(); ++cell) {  // the first maximum, as ATen's
            pool_take(norm(xw + off[cell], k, n), static_cast<int>(cell), best, arg);
          }
          st<Full>(yp + q * c + k, relu ? relu16(best) : best, n);
          st_arg<Full>(wp + q * c + k, arg, n);
        }
      }
    });
    cache.window = win;
  }
  cache.in = x;
  cache.out = y;
  cache.a = mean;
  cache.b = invstd;
  return y;
}

template <bool Full>
at::Tensor backward(const at::Tensor& g, const Cache& cache, const at::Tensor& gamma,
                    const NormArgs& a, at::Tensor* ggamma, at::Tensor* gbeta, bool input_grad) {
  const at::Tensor gc = g.contiguous();
  const Geometry geo(cache.in, a);
  const int64_t c = geo.c, cp = padded(c), rows = cache.in.numel() / c, outs = gc.numel() / c;
  TORCH_CHECK(gc.sizes() == cache.out.sizes(), "net: batch normalisation's gradient shape");
  const float *gp = gc.data_ptr<float>(), *xp = cache.in.data_ptr<float>();
  const float* yp = cache.out.data_ptr<float>();
  const uint8_t* wp = geo.pooled() ? cache.window.data_ptr<uint8_t>() : nullptr;
  const std::vector<int64_t> off = geo.cells();
  const bool relu = a.relu;
  const std::vector<float> mv = padded_values(cache.a, cp), iv = padded_values(cache.b, cp);
  auto xhat = [&](f32x16 xv, int64_t k) {
    return (xv - load16(mv.data() + k)) * load16(iv.data() + k);
  };
  // the gradient at output position q: none where the ReLU gave 0 (threshold_backward's rule)
  auto grad = [&](int64_t q, int64_t k, int n) {
    const f32x16 gv = ld<Full>(gp + q * c + k, n);
    return relu ? (ld<Full>(yp + q * c + k, n) <= 0.0f ? f32x16{} : gv) : gv;
  };
  // sum(g) and sum(g * xhat) over the output positions; a pooled one reads the input at its
  // window's maximum
  const std::vector<double> sums = channel_sums(outs, c, [&](int64_t q0, int64_t q1,
                                                             double* acc) {
    int64_t window[kBlock];  // each position's first input value
    for (int64_t q = q0; q < q1; ++q) window[q - q0] = geo.pooled() ? geo.window(q) : q * c;
    for (int64_t k = 0; k < c; k += 16) {
      const int n = lanes(c, k);
      Wide s1, s2;
      for (int64_t q = q0; q < q1; ++q) {
        const float* xw = xp + window[q - q0];
        f32x16 xv = ld<Full>(xw + k, n);
        if (wp != nullptr) {
          const i32x16 arg = ld_arg<Full>(wp + q * c + k, n);
          for (size_t cell = 1; cell < off.size(); ++cell) {
            xv = arg == static_cast<int>(cell) ? ld<Full>(xw + off[cell] + k, n) : xv;
          }
        }
        const f32x16 gv = grad(q, k, n);
        s1.widen(gv);
        s2.widen(gv * xhat(xv, k));
      }
      s1.add_to(acc + k);
      s2.add_to(acc + cp + k);
    }
  });
  for (int64_t k = 0; k < c; ++k) {
    if (ggamma != nullptr) ggamma->data_ptr<float>()[k] = static_cast<float>(sums[c + k]);
    if (gbeta != nullptr) gbeta->data_ptr<float>()[k] = static_cast<float>(sums[k]);
  }
  if (!input_grad) return {};
  // dL/dx = gamma * invstd * (g - mean(g) - xhat * mean(g * xhat)), the means over all rows
  std::vector<float> scale(cp, 0.0f), mg(cp, 0.0f), mgx(cp, 0.0f);
  const float* gam = gamma.defined() ? gamma.data_ptr<float>() : nullptr;
  for (int64_t k = 0; k < c; ++k) {
    scale[k] = (gam != nullptr ? gam[k] : 1.0f) * iv[k];
    mg[k] = static_cast<float>(sums[k] / static_cast<double>(rows));
    mgx[k] = static_cast<float>(sums[c + k] / static_cast<double>(rows));
  }
  at::Tensor gx = at::empty_like(cache.in);
  float* out = gx.data_ptr<float>();
  // input row r's channels [k, k + n) from their gradient gv
  auto write = [&](int64_t r, int64_t k, int n, f32x16 gv) {
    const f32x16 xh = xhat(ld<Full>(xp + r * c + k, n), k);
    const f32x16 v = load16(scale.data() + k) *
                     (gv - load16(mg.data() + k) - xh * load16(mgx.data() + k));
    st<Full>(out + r * c + k, v, n);
  };
  if (!geo.pooled()) {
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t k = 0; k < c; k += 16) write(r, k, lanes(c, k), grad(r, k, lanes(c, k)));
      }
    });
    return gx;
  }
  // one input row (image, row) at a time: a value gets its window's gradient if it is the
  // window's maximum; rows and columns past the last whole window get none
  at::parallel_for(0, geo.n * geo.h, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t image = r / geo.h, row = r % geo.h, i = row / geo.ph;
      for (int64_t col = 0; col < geo.w; ++col) {
        const int64_t j = col / geo.pw, at_r = r * geo.w + col;
        if (i >= geo.oh || j >= geo.ow) {
          for (int64_t k = 0; k < c; k += 16) write(at_r, k, lanes(c, k), f32x16{});
          continue;
        }
        const int64_t q = (image * geo.oh + i) * geo.ow + j;
        const int cell = static_cast<int>((row % geo.ph) * geo.pw + col % geo.pw);
        for (int64_t k = 0; k < c; k += 16) {
          const int n = lanes(c, k);
          // mutant 12: the pooled gradient goes to each window's first value, not its maximum
          const i32x16 arg = mutant() == 12 ? i32x16{} : ld_arg<Full>(wp + q * c + k, n);
          write(at_r, k, n, arg == cell ? grad(q, k, n) : f32x16{});
        }
      }
    }
  });
  return gx;
}

}  // namespace

at::Tensor batch_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              at::Tensor& moving_mean, at::Tensor& moving_var, const NormArgs& a,
                              Cache& cache, bool train, const at::Tensor& residual) {
  return x.size(3) % 16 == 0
             ? forward<true>(x, gamma, beta, moving_mean, moving_var, a, cache, train, residual)
             : forward<false>(x, gamma, beta, moving_mean, moving_var, a, cache, train, residual);
}

at::Tensor batch_norm_backward(const at::Tensor& g, const Cache& cache, const at::Tensor& gamma,
                               const NormArgs& a, at::Tensor* ggamma, at::Tensor* gbeta,
                               bool input_grad) {
  return cache.in.size(3) % 16 == 0
             ? backward<true>(g, cache, gamma, a, ggamma, gbeta, input_grad)
             : backward<false>(g, cache, gamma, a, ggamma, gbeta, input_grad);
}

}  // namespace cnnlab
