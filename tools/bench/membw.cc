#include "tools/bench/membw.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <functional>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "engine/thread_pool.h"

namespace dgpt::bench {

namespace {

// "32768K" / "2M" / "512" as written in /sys/devices/system/cpu/cpu0/cache/index*/size.
int64_t ParseCacheSize(const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (...) {
    return 0;
  }
  const char unit = used < text.size() ? text[used] : ' ';
  if (unit == 'K') return value << 10;
  if (unit == 'M') return value << 20;
  if (unit == 'G') return value << 30;
  return value;
}

// Four independent sums so the loop is not one long dependency chain; the compiler vectorizes
// it, and a core then asks memory for lines faster than they can arrive.
uint64_t SumWords(const uint64_t* p, size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3;
}

// Runs work(t) for t in [0, threads) on as many threads, started together; returns seconds from
// the start signal until the last one finished. Thread creation is not timed.
double RunTogether(int threads, const std::function<void(int)>& work) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> others;
  for (int t = 1; t < threads; ++t) {
    others.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      work(t);
    });
  }
  while (ready.load() < threads - 1) std::this_thread::yield();
  const auto start = std::chrono::steady_clock::now();
  go.store(true, std::memory_order_release);
  work(0);
  for (std::thread& thread : others) thread.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Slice t of n words over `threads`, on 64-byte boundaries.
std::pair<size_t, size_t> Slice(size_t n, int threads, int t) {
  const size_t lines = n / 8;
  const size_t begin = lines * t / threads * 8;
  const size_t end = t + 1 == threads ? n : lines * (t + 1) / threads * 8;
  return {begin, end};
}

}  // namespace

int64_t LastLevelCacheBytes() {
  int64_t largest = 0;
  for (int index = 0; index < 16; ++index) {
    std::ifstream file(fmt::format("/sys/devices/system/cpu/cpu0/cache/index{}/size", index));
    std::string text;
    if (!(file >> text)) break;
    largest = std::max(largest, ParseCacheSize(text));
  }
#ifdef _SC_LEVEL3_CACHE_SIZE
  if (largest == 0) largest = std::max<long>(0, sysconf(_SC_LEVEL3_CACHE_SIZE));
  if (largest == 0) largest = std::max<long>(0, sysconf(_SC_LEVEL2_CACHE_SIZE));
#endif
  return largest;
}

int64_t DefaultBandwidthBufferBytes() {
  return std::max<int64_t>(int64_t{256} << 20, 8 * LastLevelCacheBytes());
}

Result<std::unique_ptr<BandwidthMeter>> BandwidthMeter::Create(int64_t buffer_bytes) {
  const size_t words = static_cast<size_t>(std::max<int64_t>(buffer_bytes, 4096)) / 64 * 8;
  AlignedBytes data = AllocateWeightArena(words * sizeof(uint64_t));
  if (!data) {
    return Status::Error(
        fmt::format("cannot allocate {} MiB for the bandwidth buffer", buffer_bytes >> 20));
  }
  // Touch every page (from every thread, so each slice's pages are local to its reader).
  const int threads = DefaultThreadCount();
  uint64_t* raw = reinterpret_cast<uint64_t*>(data.get());
  RunTogether(threads, [&](int t) {
    const auto [begin, end] = Slice(words, threads, t);
    for (size_t i = begin; i < end; ++i) raw[i] = i * 0x9e3779b97f4a7c15ull;
  });
  return std::unique_ptr<BandwidthMeter>(new BandwidthMeter(std::move(data), words));
}

double BandwidthMeter::Measure(int threads, int runs, double min_seconds) {
  constexpr int kMaxRuns = 1000;
  threads = std::max(1, threads);
  std::atomic<uint64_t> sink{0};  // keeps the sums alive
  double best = 0, elapsed = 0;
  for (int run = 0; run < kMaxRuns && (run < runs || elapsed < min_seconds); ++run) {
    const double seconds = RunTogether(threads, [&](int t) {
      const auto [begin, end] = Slice(words_, threads, t);
      sink.fetch_add(SumWords(words() + begin, end - begin), std::memory_order_relaxed);
    });
    elapsed += seconds;
    best = std::max(best, static_cast<double>(buffer_bytes()) / seconds / 1e9);
  }
  return best;
}

}  // namespace dgpt::bench
