// torch.classes.cnnlab.Program: a network's blocks, added one call per block by
// cnnlab/engine/plan.py's calls (program.h). Each method below is its kind's schema: its
// name is the kind's, its arguments named and typed (int, float, bool, str); torch refuses a
// call with a missing, unknown or mistyped argument, and the checks here a value out of range.

#include "program.h"

#include <algorithm>
#include <array>
#include <string>
#include <utility>

namespace cnnlab {
namespace {

using ProgramPtr = c10::intrusive_ptr<Program>;

// Activations by their Keras names; the enum's values never leave C++.
constexpr std::array<std::pair<const char*, Act>, 5> kActivations = {{
    {"linear", kLinear}, {"relu", kRelu}, {"tanh", kTanh}, {"sigmoid", kSigmoid}, {"elu", kElu},
}};

Act activation_named(const std::string& name) {
  for (const auto& [known, act] : kActivations) {
    if (name == known) return act;
  }
  TORCH_CHECK(false, "program: unknown activation '", name, "'");
}

Pads pads_of(int64_t top, int64_t bottom, int64_t left, int64_t right) {
  TORCH_CHECK(top >= 0 && bottom >= 0 && left >= 0 && right >= 0,
              "program: padding must not be negative");
  Pads p;
  p.top = top, p.bottom = bottom, p.left = left, p.right = right;
  return p;
}

// A graph block's slot: numbered from 0, at most kMaxSlots; the Program counts them.
constexpr int64_t kMaxSlots = 4096;

int64_t slot_of(Program& program, int64_t slot) {
  TORCH_CHECK(slot >= 0 && slot < kMaxSlots, "program: a slot must be in [0, ", kMaxSlots,
              "), not ", slot);
  program.slots = std::max(program.slots, slot + 1);
  return slot;
}

void positive(int64_t v, const char* what) {
  TORCH_CHECK(v >= 1, "program: ", what, " must be at least 1, not ", v);
}

// A graph's slot kinds (program.h: Store, Load, AddStored, Concat): one argument, the slot.
template <typename Kind>
void def_slot_kind(torch::class_<Program>& program) {
  program.def(
      Kind::kName,
      [](const ProgramPtr& self, int64_t slot) {
        self->blocks.emplace_back(Kind{slot_of(*self, slot)});
      },
      "", {torch::arg("slot")});
}

// A block's name in a Program's kinds(), as Python added it.
const char* kind_of(const Block& b) {
  return std::visit([](const auto& blk) { return std::decay_t<decltype(blk)>::kName; }, b);
}

}  // namespace

torch::class_<Program> register_program(torch::Library& m) {
  using torch::arg;
  auto program = m.class_<Program>("Program")
      .def(torch::init<>())
      .def("kinds",
           [](const ProgramPtr& self) {
             std::vector<std::string> out;
             for (const Block& b : self->blocks) out.emplace_back(kind_of(b));
             return out;
           })
      .def(block::ConvPoolRelu::kName,
           [](const ProgramPtr& self, int64_t pooled_h, int64_t pooled_w) {
             positive(pooled_h, "pooled_h");
             positive(pooled_w, "pooled_w");
             self->blocks.emplace_back(block::ConvPoolRelu{pooled_h, pooled_w});
           },
           "", {arg("pooled_h"), arg("pooled_w")})
      .def(block::Flatten::kName,
           [](const ProgramPtr& self) { self->blocks.emplace_back(block::Flatten{}); })
      .def(block::Dropout::kName,
           [](const ProgramPtr& self) { self->blocks.emplace_back(block::Dropout{}); })
      .def(block::Dense::kName,
           [](const ProgramPtr& self, const std::string& activation) {
             self->blocks.emplace_back(block::Dense{activation_named(activation)});
           },
           "", {arg("activation")})
      .def(block::GlobalAverage::kName,
           [](const ProgramPtr& self) { self->blocks.emplace_back(block::GlobalAverage{}); })
      .def(block::Conv::kName,
           [](const ProgramPtr& self, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
              int64_t dilation_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left,
              int64_t pad_right, const std::string& activation, bool bias) {
             for (int64_t v : {stride_h, stride_w, dilation_h, dilation_w}) {
               positive(v, "a convolution's strides and dilation");
             }
             block::Conv c;
             c.args.sh = stride_h, c.args.sw = stride_w;
             c.args.dh = dilation_h, c.args.dw = dilation_w;
             c.args.pads = pads_of(pad_top, pad_bottom, pad_left, pad_right);
             c.args.act = activation_named(activation);
             c.bias = bias;
             self->blocks.emplace_back(c);
           },
           "",
           {arg("stride_h"), arg("stride_w"), arg("dilation_h"), arg("dilation_w"),
            arg("pad_top"), arg("pad_bottom"), arg("pad_left"), arg("pad_right"),
            arg("activation"), arg("bias")})
      .def(block::Pool::kName,
           [](const ProgramPtr& self, const std::string& mode, int64_t size_h, int64_t size_w,
              int64_t stride_h, int64_t stride_w, int64_t pad_top, int64_t pad_bottom,
              int64_t pad_left, int64_t pad_right, bool relu_after) {
             TORCH_CHECK(mode == "max" || mode == "average",
                         "program: pooling is 'max' or 'average', not '", mode, "'");
             for (int64_t v : {size_h, size_w, stride_h, stride_w}) {
               positive(v, "a pooling's size and strides");
             }
             TORCH_CHECK(!relu_after || mode == "max", "program: a ReLU after average pooling");
             block::Pool p;
             p.args.max = mode == "max";
             p.args.kh = size_h, p.args.kw = size_w, p.args.sh = stride_h, p.args.sw = stride_w;
             p.args.pads = pads_of(pad_top, pad_bottom, pad_left, pad_right);
             p.args.relu = relu_after;
             self->blocks.emplace_back(p);
           },
           "",
           {arg("mode"), arg("size_h"), arg("size_w"), arg("stride_h"), arg("stride_w"),
            arg("pad_top"), arg("pad_bottom"), arg("pad_left"), arg("pad_right"),
            arg("relu_after")})
      .def(block::Activation::kName,
           [](const ProgramPtr& self, const std::string& function) {
             self->blocks.emplace_back(block::Activation{activation_named(function)});
           },
           "", {arg("function")})
      .def(block::BatchNorm::kName,
           [](const ProgramPtr& self, bool scale, bool center, double epsilon, double momentum,
              bool relu, int64_t pool_h, int64_t pool_w, int64_t add_slot) {
             TORCH_CHECK(epsilon > 0.0, "program: batch normalisation's epsilon must be > 0");
             positive(pool_h, "batch normalisation's pool_h");
             positive(pool_w, "batch normalisation's pool_w");
             TORCH_CHECK(pool_h * pool_w <= 255,
                         "program: batch normalisation's pooling window is over 255 values");
             block::BatchNorm b;
             b.scale = scale, b.center = center;
             // mutant 8: the interface swaps two fields of one type (epsilon, momentum)
             b.args.eps = mutant() == 8 ? momentum : epsilon;
             b.args.momentum = mutant() == 8 ? epsilon : momentum;
             b.args.relu = relu;
             b.args.ph = pool_h, b.args.pw = pool_w;
             if (add_slot >= 0) {
               TORCH_CHECK(relu && pool_h * pool_w == 1 && (scale || center),
                           "program: a batch norm's Add needs its ReLU, no pooling, a weight");
               b.add_slot = slot_of(*self, add_slot);
             }
             self->blocks.emplace_back(b);
           },
           "",
           {arg("scale"), arg("center"), arg("epsilon"), arg("momentum"), arg("relu"),
            arg("pool_h"), arg("pool_w"), arg("add_slot")})
      .def(block::GlobalMax::kName,
           [](const ProgramPtr& self) { self->blocks.emplace_back(block::GlobalMax{}); })
      .def(block::Pad::kName,
           [](const ProgramPtr& self, int64_t top, int64_t bottom, int64_t left, int64_t right) {
             self->blocks.emplace_back(block::Pad{pads_of(top, bottom, left, right)});
           },
           "", {arg("top"), arg("bottom"), arg("left"), arg("right")})
      .def(block::Rescale::kName,
           [](const ProgramPtr& self, double scale, double offset) {
             self->blocks.emplace_back(block::Rescale{scale, offset});
           },
           "", {arg("scale"), arg("offset")});
  def_slot_kind<block::Store>(program);
  def_slot_kind<block::Load>(program);
  def_slot_kind<block::AddStored>(program);
  def_slot_kind<block::Concat>(program);
  return program;
}

}  // namespace cnnlab
