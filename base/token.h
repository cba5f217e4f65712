// A token's id in a vocabulary, shared by the tokenizer, the engine and the wire.
#pragma once

#include <cstdint>

namespace dgpt {

using TokenId = int32_t;

}  // namespace dgpt
