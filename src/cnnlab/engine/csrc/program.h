// The typed interface between cnnlab/engine/plan.py and the network executor (net.cpp): a
// Program is a network's blocks in order, each block a struct of named, typed fields. Python
// builds one as torch.classes.cnnlab.Program, calling one method per block, named as the
// block's kind, with keyword arguments (program.cpp declares each method's argument names
// and types, the one schema of each kind; torch checks them at the call). No kind is
// numbered across the boundary and every float arrives as a double.
//
// Maps are channels-last (N, H, W, C). A block's weights (and BatchNormalization's moving
// statistics) come in the order of the network's parameters (buffers), block after block.
#pragma once

#include <torch/custom_class.h>

#include <cstdint>
#include <variant>
#include <vector>

#include "layers.h"

namespace cnnlab {

namespace block {

// Conv2D('valid', stride 1, bias, relu) + MaxPooling2D(2x2), the ReLU after the pooling
// (blocks.cpp); only the pooled rows and columns [0, pooled_h) x [0, pooled_w). Weights w, b.
struct ConvPoolRelu {
  static constexpr const char* kName = "conv_pool_relu";
  int64_t pooled_h = 0, pooled_w = 0;
};
// (N, H, W, C) -> (N, H*W*C), Keras' (H, W, C) order: a view.
struct Flatten {
  static constexpr const char* kName = "flatten";
};
// Times the next dropout mask (nn.Dropout's draws, made by the caller), in training only.
struct Dropout {
  static constexpr const char* kName = "dropout";
};
// x @ w.T + b, then the activation. Weights w, b.
struct Dense {
  static constexpr const char* kName = "dense";
  Act activation = kLinear;
};
// (N, H, W, C) -> (N, C), the mean over H*W.
struct GlobalAverage {
  static constexpr const char* kName = "global_average";
};
// Any Conv2D (layers.cpp): strides, dilation, padding, an activation. Weights w[, b].
struct Conv {
  static constexpr const char* kName = "conv";
  ConvArgs args;
  bool bias = true;
};
// Max or average pooling of any size and stride (layers.cpp).
struct Pool {
  static constexpr const char* kName = "pool";
  PoolArgs args;
};
// An activation on its own.
struct Activation {
  static constexpr const char* kName = "activation";
  Act activation = kLinear;
};
// BatchNormalization over C (Keras' moving statistics), with the ReLU and the max pooling
// (windows as strides, 'valid') that alone read it fused where args say (norm.cpp). Weights
// [gamma][, beta]; two state tensors, the moving mean and variance.
struct BatchNorm {
  static constexpr const char* kName = "batch_norm";
  bool scale = true, center = true;
  NormArgs args;
  // a graph's residual block: the map kept in this slot added before the ReLU (Keras' Add
  // between the batch norm and its ReLU, fused in); -1: none
  int64_t add_slot = -1;
};
// (N, H, W, C) -> (N, C), the maximum over H*W.
struct GlobalMax {
  static constexpr const char* kName = "global_max";
};
// Zeros around each map (ZeroPadding2D, or a 'same' convolution's padding before a
// conv_pool_relu block).
struct Pad {
  static constexpr const char* kName = "pad";
  Pads pads;
};
// x * scale + offset (Rescaling).
struct Rescale {
  static constexpr const char* kName = "rescale";
  double scale = 1.0, offset = 0.0;
};

// A graph's maps beside the running one (plan.py orders a graph's layers and places these):
// a map read again later is kept in a numbered slot; a layer that reads a kept map makes it
// the running map; Keras' Add adds kept maps to the running one. The backward pass runs them
// backwards: a kept map's gradient is the running gradient plus what its slot gathered.
struct Store {
  static constexpr const char* kName = "store";
  int64_t slot = 0;
};
// The map kept in `slot` becomes the running map (the running one is kept, or read no more).
struct Load {
  static constexpr const char* kName = "load";
  int64_t slot = 0;
};
// The running map plus the map kept in `slot` (one call per further input of an Add).
struct AddStored {
  static constexpr const char* kName = "add";
  int64_t slot = 0;
};

// The running map and the map kept in `slot` joined along the channels (Keras'
// Concatenate on the last axis; one call per further input, in the layer's order).
struct Concat {
  static constexpr const char* kName = "concat";
  int64_t slot = 0;
};

}  // namespace block

// One block of any kind: the executor visits each alternative (a kind without a forward or
// backward case does not compile).
using Block = std::variant<block::ConvPoolRelu, block::Flatten, block::Dropout, block::Dense,
                           block::GlobalAverage, block::Conv, block::Pool, block::Activation,
                           block::BatchNorm, block::GlobalMax, block::Pad, block::Rescale,
                           block::Store, block::Load, block::AddStored, block::Concat>;

struct Program : torch::CustomClassHolder {
  std::vector<Block> blocks;
  int64_t slots = 0;  // slots the graph blocks use (one more than the largest number)
};

// Declares torch.classes.cnnlab.Program and one method per block kind (program.cpp); net.cpp
// adds the methods that run the program (logits, gradients) to the class returned.
torch::class_<Program> register_program(torch::Library& m);

}  // namespace cnnlab
