// The speedrun network's first block, fused: conv 5x5, stride 2, padding 2 (1 -> 32
// channels) -> 2x2 max pool -> ReLU, on (N, 28, 28) float32 images, and its backward
// pass to the kernel and bias (the images need no gradient). Used by
// cnnlab/train/speedrun.py.
//
// In PyTorch operations this block is a bfloat16 MKL-DNN convolution with one input
// channel (a slow kernel), a max pooling over the (N, 32, 14, 14) maps, and backward a
// 1.6M-element zero fill, a pooling scatter and the convolution's weight gradient: two
// thirds of a speedrun step. Here the 14x14 maps are never stored: each pooling window's
// four convolutions are computed in registers and only the maximum (and where it was) is
// kept; the backward pass sums over the pooled positions, a quarter of the maps. float32
// throughout (more precise than the bfloat16 it replaces, and no slower here).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "f32x16.h"

namespace {

using namespace cnnlab;  // NOLINT: the vector helpers of f32x16.h

constexpr int64_t kSide = 28;           // image side
constexpr int64_t kPad = kSide + 4;     // the image with its 2-pixel zero border
constexpr int64_t kOut = 7;             // pooled side (14x14 convolution outputs, pooled 2x2)
constexpr int64_t kCh = 32;             // filters: two 16-lane vectors
constexpr int64_t kTaps = 25;           // 5x5
constexpr int64_t kCells = kOut * kOut * kCh;

void pad_image(const float* src, float* padded) {
  std::fill(padded, padded + kPad * kPad, 0.0f);
  for (int64_t r = 0; r < kSide; ++r) {
    std::copy(src + r * kSide, src + (r + 1) * kSide, padded + (r + 2) * kPad + 2);
  }
}

// The padded-image offset of convolution output (oy, ox)'s top-left tap: stride 2.
inline int64_t origin(int64_t oy, int64_t ox) { return 2 * oy * kPad + 2 * ox; }
inline int64_t tap(int k) { return (k / 5) * kPad + k % 5; }

void check(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == at::kFloat && x.is_contiguous() &&
                  x.dim() == 3 && x.size(1) == kSide && x.size(2) == kSide,
              "speedrun block: images must be contiguous float32 (N, 28, 28) on the CPU");
  TORCH_CHECK(w.scalar_type() == at::kFloat && w.numel() == kCh * kTaps && b.numel() == kCh &&
                  b.scalar_type() == at::kFloat,
              "speedrun block: a float32 (32, 1, 5, 5) kernel and (32,) bias expected");
}

// -> (out (N, 7, 7, 32) after pooling and ReLU, idx (N, 7, 7, 32) the window positions 0..3)
std::tuple<at::Tensor, at::Tensor> speedrun_block(const at::Tensor& x, const at::Tensor& w,
                                                  const at::Tensor& b) {
  check(x, w, b);
  const int64_t n = x.size(0);
  at::Tensor wt = w.detach().reshape({kCh, kTaps}).t().contiguous();  // (25, 32)
  at::Tensor bc = b.detach().contiguous();
  at::Tensor out = at::empty({n, kOut, kOut, kCh}, x.options());
  at::Tensor idx = at::empty({n, kOut, kOut, kCh}, x.options().dtype(at::kByte));
  const float* xp = x.data_ptr<float>();
  const float* wp = wt.data_ptr<float>();
  const float* bp = bc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  uint8_t* ip = idx.data_ptr<uint8_t>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    float padded[kPad * kPad];
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xp + i * kSide * kSide, padded);
      for (int64_t h = 0; h < kCh; h += 16) {  // each half of the channels, its kernel in registers
        f32x16 wk[kTaps];
        for (int k = 0; k < kTaps; ++k) wk[k] = load16(wp + k * kCh + h);
        const f32x16 bias = load16(bp + h);
        for (int64_t py = 0; py < kOut; ++py) {
          for (int64_t px = 0; px < kOut; ++px) {
            f32x16 best{};
            i32x16 arg{};
            for (int d = 0; d < 4; ++d) {
              const float* at = padded + origin(2 * py + (d >> 1), 2 * px + (d & 1));
              f32x16 acc = bias;
#pragma GCC unroll 25
              for (int k = 0; k < kTaps; ++k) acc += wk[k] * at[tap(k)];
              if (d == 0) {
                best = acc;
              } else {
                pool_take(acc, d, best, arg);
              }
            }
            const int64_t o = ((i * kOut + py) * kOut + px) * kCh + h;
            store16(op + o, relu16(best));
            store_arg(ip + o, arg);
          }
        }
      }
    }
  });
  return {out, idx};
}

// d(loss)/d(kernel (32, 1, 5, 5)) and d(loss)/d(bias) from grad = d(loss)/d(out): through
// the ReLU (out > 0) to the pooled position, times the image under the kernel there.
std::tuple<at::Tensor, at::Tensor> speedrun_block_backward(const at::Tensor& grad,
                                                           const at::Tensor& x,
                                                           const at::Tensor& out,
                                                           const at::Tensor& idx) {
  const int64_t n = x.size(0);
  TORCH_CHECK(grad.scalar_type() == at::kFloat && grad.is_contiguous() &&
                  grad.numel() == n * kCells && out.numel() == n * kCells &&
                  idx.numel() == n * kCells && x.is_contiguous(),
              "speedrun block backward: (N, 7, 7, 32) contiguous float32 gradient expected");
  const int threads = at::get_num_threads();
  std::vector<float> part(static_cast<size_t>(threads) * (kTaps + 1) * kCh, 0.0f);
  const float* xp = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  const float* op = out.data_ptr<float>();
  const uint8_t* ip = idx.data_ptr<uint8_t>();
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    float padded[kPad * kPad];
    float* mine = part.data() + at::get_thread_num() * (kTaps + 1) * kCh;
    for (int64_t h = 0; h < kCh; h += 16) {  // each half of the channels, its sums in registers
      f32x16 acc[kTaps + 1] = {};  // 25 taps and the bias
      for (int64_t i = begin; i < end; ++i) {
        pad_image(xp + i * kSide * kSide, padded);
        for (int64_t py = 0; py < kOut; ++py) {
          for (int64_t px = 0; px < kOut; ++px) {
            const int64_t o = ((i * kOut + py) * kOut + px) * kCh + h;
            const f32x16 g = load16(op + o) > 0.0f ? load16(gp + o) : f32x16{};
            const i32x16 arg = load_arg(ip + o);
            acc[kTaps] += g;
            for (int d = 0; d < 4; ++d) {
              const float* at = padded + origin(2 * py + (d >> 1), 2 * px + (d & 1));
              const f32x16 gd = arg == d ? g : f32x16{};
#pragma GCC unroll 25
              for (int k = 0; k < kTaps; ++k) acc[k] += gd * at[tap(k)];
            }
          }
        }
      }
      for (int k = 0; k <= kTaps; ++k) {
        store16(mine + k * kCh + h, load16(mine + k * kCh + h) + acc[k]);
      }
    }
  });
  at::Tensor gw = at::empty({kCh, 1, 5, 5}, x.options());
  at::Tensor gb = at::empty({kCh}, x.options());
  float* gwp = gw.data_ptr<float>();
  float* gbp = gb.data_ptr<float>();
  for (int64_t c = 0; c < kCh; ++c) {
    for (int k = 0; k <= kTaps; ++k) {
      float sum = 0.0f;
      for (int t = 0; t < threads; ++t) sum += part[(t * (kTaps + 1) + k) * kCh + c];
      if (k < kTaps) {
        gwp[c * kTaps + k] = sum;
      } else {
        gbp[c] = sum;
      }
    }
  }
  return {gw, gb};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cnnlab, m) {
  m.def("speedrun_block(Tensor x, Tensor w, Tensor b) -> (Tensor, Tensor)");
  m.def(
      "speedrun_block_backward(Tensor grad, Tensor x, Tensor out, Tensor idx) -> "
      "(Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cnnlab, CPU, m) {
  m.impl("speedrun_block", &speedrun_block);
  m.impl("speedrun_block_backward", &speedrun_block_backward);
}
