// The GPT-2 tensor layout as Hugging Face saves it (Conv1D weights [in, out]), written out
// independently of engine/checkpoint.cc so the tests that build checkpoints do not take the
// shapes from the code they test.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dgpt::testing {

// Tensor name (with `prefix`) -> shape, for every tensor of a GPT2LMHeadModel transformer.
inline std::map<std::string, std::vector<int64_t>> Gpt2TensorShapes(int n_layer, int64_t n_embd,
                                                                    int64_t vocab_size,
                                                                    int64_t n_positions,
                                                                    const std::string& prefix) {
  const int64_t C = n_embd;
  std::map<std::string, std::vector<int64_t>> shapes;
  shapes[prefix + "wte.weight"] = {vocab_size, C};
  shapes[prefix + "wpe.weight"] = {n_positions, C};
  for (int i = 0; i < n_layer; ++i) {
    const std::string h = prefix + "h." + std::to_string(i) + ".";
    shapes[h + "ln_1.weight"] = shapes[h + "ln_1.bias"] = {C};
    shapes[h + "attn.c_attn.weight"] = {C, 3 * C};
    shapes[h + "attn.c_attn.bias"] = {3 * C};
    shapes[h + "attn.c_proj.weight"] = {C, C};
    shapes[h + "attn.c_proj.bias"] = {C};
    shapes[h + "ln_2.weight"] = shapes[h + "ln_2.bias"] = {C};
    shapes[h + "mlp.c_fc.weight"] = {C, 4 * C};
    shapes[h + "mlp.c_fc.bias"] = {4 * C};
    shapes[h + "mlp.c_proj.weight"] = {4 * C, C};
    shapes[h + "mlp.c_proj.bias"] = {C};
  }
  shapes[prefix + "ln_f.weight"] = shapes[prefix + "ln_f.bias"] = {C};
  return shapes;
}

}  // namespace dgpt::testing
