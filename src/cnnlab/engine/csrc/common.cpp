// The fast engine's shared kernels on the CPU: dropout masks drawn as PyTorch's CPU dropout
// draws them (bit for bit, several times faster) and Adam's update in one loop. Built and
// loaded by cnnlab/engine/native.py, with the block kernels (blocks.cpp, net.cpp) and the
// speedrun's (speedrun.cpp).
//
// Ops (torch.ops.cnnlab.*): dropout_mask and adam_step (torch.optim.Adam's update).

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

namespace {

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
}

TORCH_LIBRARY_IMPL(cnnlab, CompositeExplicitAutograd, m) {
  m.impl("dropout_mask", &dropout_mask);
  m.impl("adam_step", &adam_step);
}
