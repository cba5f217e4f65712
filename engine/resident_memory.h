// How much memory this process holds in RAM, for reports (worker STATS, dgpt bench).
#pragma once

#include <cstdint>

namespace dgpt {

// Resident set size in bytes (from /proc/self/statm); 0 where that cannot be read.
uint64_t ResidentMemoryBytes();

}  // namespace dgpt
