// The general blocks of the fast engine (layers.cpp), composed by the executor (net.cpp).
// Every map is (N, H, W, C) contiguous, channels-last.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "blocks.h"

namespace cnnlab {

// activations; Python names them (program.cpp reads the names), these values stay in C++
enum Act : int64_t { kLinear = 0, kRelu = 1, kTanh = 2, kSigmoid = 3, kElu = 4 };

void activate_(at::Tensor& y, int64_t act);
// dL/d(pre-activation) from g = dL/dy and the activation's output y
at::Tensor activation_backward(const at::Tensor& g, const at::Tensor& y, int64_t act);

struct Pads {
  int64_t top = 0, bottom = 0, left = 0, right = 0;  // TensorFlow's 'same': the odd one after
};

// What a block's backward pass needs from its forward pass: its input and output, and two
// tensors of its own kind's (a convolution's input columns or padded input; pooling's
// indices or window counts and padded input; batch normalisation's mean and 1/std), and
// fused batch normalisation's pooling windows (each maximum's offset in its window, uint8).
struct Cache {
  at::Tensor in, out, a, b, window;
};

struct ConvArgs {
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  Pads pads;
  int64_t act = kLinear;
};

// Conv2D: x (N, H, W, Cin), w (Cout, Cin, kh, kw), b (Cout) or undefined -> (N, oh, ow, Cout)
at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                        const ConvArgs& c, Cache& cache);
// From g = dL/dy: dL/dw into gw, dL/db into *gb (when the layer has a bias); dL/dx (x's shape)
// when input_grad, else undefined
at::Tensor conv_backward(const at::Tensor& g, const Cache& cache, const at::Tensor& w,
                         const ConvArgs& c, at::Tensor& gw, at::Tensor* gb, bool input_grad);

struct PoolArgs {
  bool max = true;  // else average (over the real values only, where 'same' pads)
  int64_t kh = 2, kw = 2, sh = 2, sw = 2;
  Pads pads;
  bool relu = false;  // the previous convolution's ReLU, applied after the (max) pooling
};

at::Tensor pool_forward(const at::Tensor& x, const PoolArgs& p, Cache& cache);
at::Tensor pool_backward(const at::Tensor& g, const Cache& cache, const PoolArgs& p);

struct NormArgs {
  double eps = 1e-3, momentum = 0.99;
  // the layers fused after it: a ReLU, then max pooling of ph x pw windows with strides
  // (ph, pw), 'valid' (1 x 1: none); the ReLU goes after the pooling (the same values)
  bool relu = false;
  int64_t ph = 1, pw = 1;
};

// BatchNormalization over C; gamma and beta may be undefined (scale=False, center=False),
// then the ReLU and max pooling of `a` (the output is the pooled map; the full normalised
// map is never written). Training updates the moving statistics as Keras: moving * momentum +
// batch * (1 - momentum), the batch's biased variance.
// residual: a map of x's shape added before the ReLU (a residual block's Add), or undefined
at::Tensor batch_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              at::Tensor& moving_mean, at::Tensor& moving_var, const NormArgs& a,
                              Cache& cache, bool train, const at::Tensor& residual = {});
// g: dL/d(the output), pooled where `a` pools; the ReLU's zeros and the pooling's dropped
// positions are left out of the sums (the batch's statistics are in the cache)
at::Tensor batch_norm_backward(const at::Tensor& g, const Cache& cache, const at::Tensor& gamma,
                               const NormArgs& a, at::Tensor* ggamma, at::Tensor* gbeta,
                               bool input_grad);

// GlobalMaxPooling2D: (N, H, W, C) -> (N, C)
at::Tensor global_max_forward(const at::Tensor& x, Cache& cache);
at::Tensor global_max_backward(const at::Tensor& g, const Cache& cache);

}  // namespace cnnlab
