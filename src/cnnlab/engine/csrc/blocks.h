// The per-block kernels of the fast engine (blocks.cpp), shared with the executor (net.cpp).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstdlib>

namespace cnnlab {

// Mutation checks (tests/engine/test_blocks.py): a build with -DCNNLAB_MUTANTS breaks the kernels
// on purpose as $CNNLAB_MUTANT says, and the tests must catch each. Always 0 otherwise.
#ifdef CNNLAB_MUTANTS
inline int mutant() {
  static const int m = [] {
    const char* v = std::getenv("CNNLAB_MUTANT");
    return v != nullptr ? std::atoi(v) : 0;
  }();
  return m;
}
#else
constexpr int mutant() { return 0; }
#endif

// Kernel sizes up to 7x7 run here (3x3 and 5x5 specialised); larger ones stay with PyTorch.
constexpr int kMaxTaps = 49;

// One "Conv2D('valid', stride 1, bias, relu) + MaxPooling2D(2x2)" block, ReLU after the
// pooling. x: (N, H, W, Cin) contiguous, channels-last float32 network inputs;
// w: (Cout, Cin, kh, kw); b: (Cout). Only the pooled rows and columns
// [0, ph) x [0, pw) are computed (a later block may need fewer than pooling gives).
struct PoolOut {
  at::Tensor a;    // (N, ph, pw, Cout) float32: relu(max over each 2x2 window)
  at::Tensor idx;  // (N, ph, pw, Cout) uint8: the window position taken (0..3), when kept
};

PoolOut conv_pool_relu_forward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                               int64_t ph, int64_t pw, bool keep_indices);

// From g = dL/da (N, ph, pw, Cout; its values are overwritten): writes dL/dw into gw (Cout, Cin, kh, kw) and dL/db into
// gb; returns dL/dx (x's shape) when input_grad, else an undefined tensor. Sums over the
// nonzero gradients only: one window position each, and none where the ReLU cut.
at::Tensor conv_pool_relu_backward(const at::Tensor& g, const PoolOut& out, const at::Tensor& x,
                                   const at::Tensor& w, at::Tensor& gw, at::Tensor& gb,
                                   bool input_grad);

}  // namespace cnnlab
