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
// indices or window counts and padded input; batch normalisation's mean and 1/std).
struct Cache {
  at::Tensor in, out, a, b;
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
};

// BatchNormalization over C; gamma and beta may be undefined (scale=False, center=False).
// Training updates the moving statistics as Keras: moving * momentum + batch * (1 - momentum),
// the batch's biased variance.
at::Tensor batch_norm_forward(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                              at::Tensor& moving_mean, at::Tensor& moving_var, const NormArgs& a,
                              Cache& cache, bool train);
// (the batch's statistics are in the cache: epsilon and momentum are not needed again)
at::Tensor batch_norm_backward(const at::Tensor& g, const Cache& cache, const at::Tensor& gamma,
                               at::Tensor* ggamma, at::Tensor* gbeta, bool input_grad);

// GlobalMaxPooling2D: (N, H, W, C) -> (N, C)
at::Tensor global_max_forward(const at::Tensor& x, Cache& cache);
at::Tensor global_max_backward(const at::Tensor& g, const Cache& cache);

}  // namespace cnnlab
