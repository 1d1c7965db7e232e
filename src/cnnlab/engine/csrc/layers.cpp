// The fast engine's general blocks (layers.h): any Conv2D (padding, strides, dilation, bias
// or none, an activation), max and average pooling of any size and stride ('valid' or
// TensorFlow's 'same'), a standalone activation, BatchNormalization on maps (Keras' moving
// statistics: norm.cpp) and global max pooling. Maps are channels-last (N, H, W, C) contiguous; the
// convolutions and poolings view them as (N, C, H, W) with channels-last strides for ATen's
// kernels (MKL-DNN's convolution, the channels-last pooling loops): nothing is transposed.
// The same float32 operations as the network's PyTorch module, with the same backward
// formulas (threshold/tanh/sigmoid/elu backward from the output), so gradients agree with
// autograd's to rounding.

#include "layers.h"

#include <ATen/Parallel.h>

#include <limits>
#include <vector>

namespace cnnlab {
namespace {

at::Tensor nchw(const at::Tensor& nhwc) { return nhwc.permute({0, 3, 1, 2}); }
at::Tensor nhwc(const at::Tensor& nchw_view) {
  return nchw_view.contiguous(at::MemoryFormat::ChannelsLast).permute({0, 2, 3, 1});
}

bool padded(const Pads& p) { return p.top || p.bottom || p.left || p.right; }
bool symmetric(const Pads& p) { return p.top == p.bottom && p.left == p.right; }

at::Tensor pad(const at::Tensor& v, const Pads& p, double value) {
  return at::constant_pad_nd(v, {p.left, p.right, p.top, p.bottom}, value)
      .contiguous(at::MemoryFormat::ChannelsLast);
}

// a gradient of a padded (N, C, H + pads, W + pads) view, back to the unpadded rows/columns
at::Tensor unpad(const at::Tensor& g, const Pads& p, int64_t h, int64_t w) {
  return padded(p) ? g.narrow(2, p.top, h).narrow(3, p.left, w) : g;
}

// A convolution's padding: MKL-DNN pads symmetrically itself; TensorFlow's asymmetric
// 'same' (the odd pixel after) is added beforehand as explicit zeros.
struct ConvPadding {
  bool explicit_zeros;
  std::vector<int64_t> symmetric;  // (top, left) for at::convolution, 0 when explicit
};
ConvPadding conv_padding(const Pads& p) {
  if (padded(p) && !symmetric(p)) return {true, {0, 0}};
  return {false, {p.top, p.left}};
}

}  // namespace

void activate_(at::Tensor& y, int64_t act) {
  switch (act) {
    case kLinear:
      break;
    case kRelu:
      at::relu_(y);
      break;
    case kTanh:
      at::tanh_(y);
      break;
    case kSigmoid:
      at::sigmoid_(y);
      break;
    case kElu:
      at::elu_(y);
      break;
    default:
      TORCH_CHECK(false, "net: unknown activation ", act);
  }
}

at::Tensor activation_backward(const at::Tensor& g, const at::Tensor& y, int64_t act) {
  if (mutant() == 5 && act != kLinear) return g;  // mutant 5: the activation's derivative lost
  switch (act) {
    case kRelu:
      return at::threshold_backward(g, y, 0);
    case kTanh:
      return at::tanh_backward(g, y);
    case kSigmoid:
      return at::sigmoid_backward(g, y);
    case kElu:
      return at::elu_backward(g, 1.0, 1.0, 1.0, /*is_result=*/true, y);
    default:
      return g;
  }
}

at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const ConvArgs& c, Cache& cache) {
  const int64_t n = x.size(0), cout = w.size(0), kh = w.size(2), kw = w.size(3);
  TORCH_CHECK(x.dim() == 4 && x.size(3) == w.size(1), "net: a convolution's input channels");
  at::Tensor v = nchw(x);
  at::Tensor y;
  if (x.size(3) == 1) {
    // one input channel (MKL-DNN's slowest case; at::im2col took 0.2-0.9 ms a step): the
    // taps under each output position as a (taps, N*oh*ow) matrix of shifted, strided
    // copies of the images, filled in one loop, times the kernel gives channels-last
    // (N*oh*ow, Cout) at once
    if (padded(c.pads)) v = pad(v, c.pads, 0.0);
    const at::Tensor img = v.select(1, 0).contiguous();  // (N, H + pads, W + pads)
    const int64_t H = img.size(1), W = img.size(2), taps = kh * kw;
    const int64_t oh = (H - c.dh * (kh - 1) - 1) / c.sh + 1;
    const int64_t ow = (W - c.dw * (kw - 1) - 1) / c.sw + 1;
    cache.a = at::empty({taps, n * oh * ow}, x.options());
    const float* src = img.data_ptr<float>();
    float* cols = cache.a.data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        for (int64_t t = 0; t < taps; ++t) {
          const float* from = src + i * H * W + (t / kw) * c.dh * W + (t % kw) * c.dw;
          float* to = cols + t * n * oh * ow + i * oh * ow;
          for (int64_t yo = 0; yo < oh; ++yo) {
            for (int64_t xo = 0; xo < ow; ++xo) to[yo * ow + xo] = from[yo * c.sh * W + xo * c.sw];
          }
        }
      }
    });
    const at::Tensor wt = w.reshape({cout, kh * kw}).t();
    y = b.defined() ? at::addmm(b, cache.a.t(), wt) : at::mm(cache.a.t(), wt);
    y = y.view({n, oh, ow, cout});
  } else {
    const ConvPadding pads = conv_padding(c.pads);
    if (pads.explicit_zeros) v = pad(v, c.pads, 0.0);
    cache.a = v;  // the (padded) input, for the backward pass
    const at::Tensor wcl = w.contiguous(at::MemoryFormat::ChannelsLast);
    y = nhwc(at::convolution(v, wcl, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt,
                             {c.sh, c.sw}, pads.symmetric, {c.dh, c.dw}, false, {0, 0}, 1));
  }
  activate_(y, c.act);
  cache.in = x;
  cache.out = y;
  return y;
}

at::Tensor conv_backward(const at::Tensor& g, const Cache& cache, const at::Tensor& w,
                         const ConvArgs& c, at::Tensor& gw, at::Tensor* gb, bool input_grad) {
  const at::Tensor gy = activation_backward(g, cache.out, c.act).contiguous();  // (N, oh, ow, Cout)
  const int64_t cout = w.size(0);
  if (cache.in.size(3) == 1) {
    TORCH_CHECK(!input_grad, "net: no input gradient for a one-channel convolution");
    const at::Tensor g2 = gy.view({-1, cout});  // (N*oh*ow, Cout)
    gw.view({cout, -1}).copy_(at::mm(g2.t(), cache.a.t()));
    if (gb != nullptr) at::sum_out(*gb, g2, {0});
    return {};
  }
  const ConvPadding pads = conv_padding(c.pads);
  // the bias's gradient as ATen's sum over the (N*oh*ow, Cout) rows: MKL-DNN's own took
  // 5.4% of vgg_bn's step (perf samples), ATen's sum 2.9%
  if (gb != nullptr) at::sum_out(*gb, gy.view({-1, cout}), {0});
  auto [gi, gwt, gbt] = at::convolution_backward(
      nchw(gy), cache.a, w.contiguous(at::MemoryFormat::ChannelsLast), c10::nullopt,
      {c.sh, c.sw}, pads.symmetric, {c.dh, c.dw}, false, {0, 0}, 1, {input_grad, true, false});
  gw.copy_(gwt);
  if (!input_grad) return {};
  return nhwc(pads.explicit_zeros ? unpad(gi, c.pads, cache.in.size(1), cache.in.size(2)) : gi);
}

at::Tensor pool_forward(const at::Tensor& x, const PoolArgs& p, Cache& cache) {
  at::Tensor v = nchw(x);
  if (padded(p.pads)) v = pad(v, p.pads, p.max ? -std::numeric_limits<double>::infinity() : 0.0);
  at::Tensor y;
  if (p.max) {
    auto [out, idx] = at::max_pool2d_with_indices(v, {p.kh, p.kw}, {p.sh, p.sw}, {0, 0}, {1, 1});
    y = out;
    cache.a = idx;
  } else {
    y = at::avg_pool2d(v, {p.kh, p.kw}, {p.sh, p.sw});
    if (padded(p.pads)) {  // average over the real values only, as Keras
      const at::Tensor ones = at::ones({1, 1, x.size(1), x.size(2)}, x.options());
      cache.a = at::avg_pool2d(pad(ones, p.pads, 0.0), {p.kh, p.kw}, {p.sh, p.sw});
      y = y / cache.a;
    }
  }
  y = nhwc(y);
  if (p.relu) at::relu_(y);  // after max pooling: relu(max(a)) == max(relu(a)), on fewer values
  cache.in = x;
  cache.b = v;
  cache.out = y;
  return y;
}

at::Tensor pool_backward(const at::Tensor& g, const Cache& cache, const PoolArgs& p) {
  at::Tensor gv = nchw(p.relu ? at::threshold_backward(g, cache.out, 0) : g);
  at::Tensor gi;
  if (p.max) {
    gi = at::max_pool2d_with_indices_backward(gv, cache.b, {p.kh, p.kw}, {p.sh, p.sw}, {0, 0},
                                              {1, 1}, false, cache.a);
  } else {
    if (padded(p.pads)) gv = gv / cache.a;
    gi = at::avg_pool2d_backward(gv, cache.b, {p.kh, p.kw}, {p.sh, p.sw}, {0, 0}, false, true,
                                 c10::nullopt);
    if (mutant() == 6) gi = gi * 2;  // mutant 6: average pooling's gradient scaled twice
  }
  return nhwc(unpad(gi, p.pads, cache.in.size(1), cache.in.size(2)));
}

at::Tensor global_max_forward(const at::Tensor& x, Cache& cache) {
  cache.in = x;
  cache.out = at::amax(x.view({x.size(0), -1, x.size(3)}), {1});  // (N, C)
  return cache.out;
}

at::Tensor global_max_backward(const at::Tensor& g, const Cache& cache) {
  // amax's gradient, as autograd: shared equally by the positions that tie for the maximum
  const at::Tensor v = cache.in.view({cache.in.size(0), -1, cache.in.size(3)});
  const at::Tensor hit = (v == cache.out.unsqueeze(1)).to(g.scalar_type());
  return (g.unsqueeze(1) / hit.sum(1, true) * hit).view(cache.in.sizes());
}

}  // namespace cnnlab
