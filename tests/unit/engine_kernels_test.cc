// The kernel sets (engine/kernels) against float64 references written from the definitions in
// kernels.h, against each other, and against themselves over different row ranges: every variant
// this CPU can run is tested, including the alternatives dispatch never picks here (avx512 without
// VNNI, neon without dotprod), which must agree bit for bit with the preferred one.
#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"

using namespace dgpt;
using kernels::KernelVariant;

namespace {

const std::vector<int64_t> kFloatCols = {1, 7, 32, 33, 64, 96, 100, 768, 3072};
const std::vector<int64_t> kQ8Cols = {32, 64, 96, 768, 3072};
const WeightFormat kFormats[] = {WeightFormat::kF32, WeightFormat::kF16, WeightFormat::kQ8_0};

const std::vector<int64_t>& ColsFor(WeightFormat format) {
  return format == WeightFormat::kQ8_0 ? kQ8Cols : kFloatCols;
}

std::vector<float> RandomFloats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

// Index of the first element whose bits differ, or -1.
template <typename T>
int64_t FirstBitDifference(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(T)) != 0) return static_cast<int64_t>(i);
  }
  return -1;
}

// A weight matrix in one format, with the exact value of every stored weight (what a float64
// reference multiplies).
struct Matrix {
  WeightFormat format;
  int64_t rows, cols;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
  std::vector<BlockQ8_0> q8;
  std::vector<double> values;
};

Matrix RandomMatrix(WeightFormat format, int64_t rows, int64_t cols, uint32_t seed) {
  Matrix m{format, rows, cols, {}, {}, {}, {}};
  const std::vector<float> floats = RandomFloats(rows * cols, seed);
  switch (format) {
    case WeightFormat::kF32:
      m.f32 = floats;
      m.values.assign(floats.begin(), floats.end());
      break;
    case WeightFormat::kF16:
      for (float f : floats) {
        m.f16.push_back(FloatToHalf(f));
        m.values.push_back(HalfToFloat(m.f16.back()));
      }
      break;
    case WeightFormat::kQ8_0: {
      // The whole int8 range, -128 included (quantize_q8_0 never makes it; other tools may), and
      // scales of both signs.
      std::mt19937 rng(seed);
      std::uniform_int_distribution<int> q(-128, 127);
      std::uniform_real_distribution<float> scale(-0.02f, 0.05f);
      m.q8.resize(rows * cols / kQ8BlockSize);
      for (BlockQ8_0& block : m.q8) {
        block.scale = FloatToHalf(scale(rng));
        for (int8_t& v : block.q) v = static_cast<int8_t>(q(rng));
        for (int8_t v : block.q) m.values.push_back(double{HalfToFloat(block.scale)} * v);
      }
      break;
    }
  }
  return m;
}

// The activation vector as each format's gemv takes it, with its exact values.
struct Activation {
  std::vector<float> f32;
  std::vector<BlockQ8_0> q8;
  std::vector<double> values;
};

Activation RandomActivation(const KernelSet& set, WeightFormat format, int64_t cols,
                            uint32_t seed) {
  Activation x;
  x.f32 = RandomFloats(cols, seed, 2.0f);
  if (format == WeightFormat::kQ8_0) {
    x.q8.resize(cols / kQ8BlockSize);
    set.quantize_q8_0(x.q8.data(), x.f32.data(), cols);
    for (const BlockQ8_0& block : x.q8) {
      for (int8_t v : block.q) x.values.push_back(double{HalfToFloat(block.scale)} * v);
    }
  } else {
    x.values.assign(x.f32.begin(), x.f32.end());
  }
  return x;
}

// y[r0, r1) through `set`; y must hold m.rows floats.
void Gemv(const KernelSet& set, const Matrix& m, const Activation& x, float* y, int64_t r0,
          int64_t r1) {
  switch (m.format) {
    case WeightFormat::kF32:
      set.gemv_f32(y, m.f32.data(), x.f32.data(), m.cols, r0, r1);
      break;
    case WeightFormat::kF16:
      set.gemv_f16(y, m.f16.data(), x.f32.data(), m.cols, r0, r1);
      break;
    case WeightFormat::kQ8_0:
      set.gemv_q8_0(y, m.q8.data(), x.q8.data(), m.cols, r0, r1);
      break;
  }
}

std::vector<float> GemvAll(const KernelSet& set, const Matrix& m, const Activation& x) {
  std::vector<float> y(m.rows);
  Gemv(set, m, x, y.data(), 0, m.rows);
  return y;
}

// quantize_q8_0 as kernels.h defines it, one element at a time.
std::vector<BlockQ8_0> QuantizeByDefinition(const std::vector<float>& x) {
  std::vector<BlockQ8_0> out(x.size() / kQ8BlockSize);
  for (size_t b = 0; b < out.size(); ++b) {
    float amax = 0.0f;
    for (int i = 0; i < kQ8BlockSize; ++i) amax = std::max(amax, std::abs(x[b * 32 + i]));
    out[b].scale = FloatToHalf(std::min(amax / 127.0f, 65504.0f));
    const float d = HalfToFloat(out[b].scale);
    for (int i = 0; i < kQ8BlockSize; ++i) {
      const float q = d == 0.0f ? 0.0f : std::nearbyint(x[b * 32 + i] / d);
      out[b].q[i] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
  }
  return out;
}

// Activations that probe quantize_q8_0's edges, one 32-value block per case.
std::vector<float> QuantizeEdgeCases() {
  std::vector<std::vector<float>> blocks;
  const auto fill = [](float value) { return std::vector<float>(kQ8BlockSize, value); };
  blocks.push_back(fill(0.0f));   // all zero: scale 0, q 0
  blocks.push_back(fill(-0.0f));  // negative zeros
  {
    // amax 127 gives d = 1 exactly: halves round to even.
    std::vector<float> ties = fill(0.0f);
    const float values[] = {127.0f, 2.5f,  3.5f,   -2.5f,   -3.5f,       0.5f,   -0.5f,
                            1.5f,   -1.5f, 126.5f, -126.5f, 0.49999997f, -127.0f};
    std::copy(std::begin(values), std::end(values), ties.begin());
    blocks.push_back(ties);
  }
  {
    // amax 63.5 gives d = 0.5: x / d = k + 0.5 for these.
    std::vector<float> ties = fill(0.25f);
    ties[0] = 63.5f, ties[1] = -0.75f, ties[2] = 1.25f, ties[3] = -1.25f;
    blocks.push_back(ties);
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  // From the largest floats down past the smallest scale a half can hold: huge blocks clamp the
  // scale to 65504 (and q to +-127), tiny ones round the scale to a subnormal half (then
  // x / d exceeds 127 and is clamped) or to zero.
  for (float magnitude :
       {3e38f, 1e10f, 8.4e6f, 1e4f, 1.0f, 1e-3f, 1e-5f, 7e-6f, 4e-6f, 1e-6f, 1e-9f, 1e-40f}) {
    std::vector<float> block(kQ8BlockSize);
    for (float& v : block) v = magnitude * unit(rng);
    block[5] = magnitude;  // a value at exactly amax
    blocks.push_back(block);
  }
  // Ties at scales that are not powers of two, where x * (1 / d) would round differently from
  // x / d: with amax = 127 d the scale is exactly d, and every (k + 0.5) d is a float.
  for (int i = 0; i < 24; ++i) {
    const float d =
        HalfToFloat(FloatToHalf(std::ldexp(1.0f + 0.75f * (unit(rng) + 1.0f), -14 + i)));
    std::vector<float> block = {127.0f * d};
    for (int k = 1; k < kQ8BlockSize; ++k) block.push_back(((k * 37) % 253 - 126.5f) * d);
    blocks.push_back(block);
  }
  {
    std::vector<float> mixed = RandomFloats(kQ8BlockSize, 8, 1e-4f);
    mixed[31] = -1e4f;  // one large value: the rest quantize to 0
    blocks.push_back(mixed);
    blocks.push_back(fill(0.0f));
    blocks.back()[17] = 1e-30f;  // a lone tiny value: scale rounds to 0
  }
  std::vector<float> x;
  for (const auto& block : blocks) x.insert(x.end(), block.begin(), block.end());
  const std::vector<float> random = RandomFloats(kQ8BlockSize * 40, 9, 3.0f);
  x.insert(x.end(), random.begin(), random.end());
  return x;
}

}  // namespace

TEST_CASE("kernels: weight format names, parsing and row sizes", "[kernels]") {
  REQUIRE(WeightRowBytes(WeightFormat::kF32, 768) == 3072);
  REQUIRE(WeightRowBytes(WeightFormat::kF16, 768) == 1536);
  REQUIRE(WeightRowBytes(WeightFormat::kQ8_0, 768) == 24 * 34);
  REQUIRE(WeightRowBytes(WeightFormat::kQ8_0, 3072) == 96 * 34);
  for (WeightFormat format : kFormats) {
    WeightFormat parsed = WeightFormat::kF32;
    REQUIRE(ParseWeightFormat(WeightFormatName(format), &parsed));
    REQUIRE(parsed == format);
  }
  REQUIRE(WeightFormatName(WeightFormat::kQ8_0) == "q8_0");
  const std::pair<const char*, WeightFormat> aliases[] = {
      {"fp32", WeightFormat::kF32}, {"fp16", WeightFormat::kF16}, {"q8", WeightFormat::kQ8_0}};
  for (const auto& [name, format] : aliases) {
    WeightFormat parsed = WeightFormat::kF32;
    REQUIRE(ParseWeightFormat(name, &parsed));
    REQUIRE(parsed == format);
  }
  WeightFormat untouched = WeightFormat::kF16;
  REQUIRE_FALSE(ParseWeightFormat("q4_0", &untouched));
  REQUIRE_FALSE(ParseWeightFormat("", &untouched));
  REQUIRE(untouched == WeightFormat::kF16);
}

TEST_CASE("kernels: dispatch lists portable first and honours DGPT_KERNELS", "[kernels]") {
  const std::vector<const KernelSet*> available = AvailableKernels();
  REQUIRE(!available.empty());
  REQUIRE(available.front()->name == "portable");
  std::string names;
  for (const KernelSet* set : available)
    names += (names.empty() ? "" : ", ") + std::string(set->name);
  INFO("available: " << names);
  for (size_t i = 0; i < available.size(); ++i) {
    for (size_t j = i + 1; j < available.size(); ++j)
      REQUIRE(available[i]->name != available[j]->name);
  }
  const KernelSet& best = *available.back();
  const KernelSet& active = ActiveKernels();
  if (std::getenv("DGPT_KERNELS") == nullptr) REQUIRE(&active == &best);
  REQUIRE(std::find(available.begin(), available.end(), &active) != available.end());

  std::string warning;
  REQUIRE(&kernels::SelectKernels("", available, &warning) == &best);
  REQUIRE(warning.empty());
  for (const KernelSet* set : available) {
    REQUIRE(&kernels::SelectKernels(set->name, available, &warning) == set);
    REQUIRE(warning.empty());
  }
  for (const char* unavailable : {"xyz", "Portable", "sse2"}) {
    warning.clear();
    REQUIRE(&kernels::SelectKernels(unavailable, available, &warning) == &best);
    REQUIRE(warning == "dgpt: DGPT_KERNELS=" + std::string(unavailable) +
                           " is not available on this CPU (available: " + names + "); using " +
                           std::string(best.name));
  }
  // The preferred variant of each name is the one AvailableKernels lists.
  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    const auto same_name = std::find_if(available.begin(), available.end(),
                                        [&](auto* set) { return set->name == variant.set->name; });
    REQUIRE(same_name != available.end());
  }
}

TEST_CASE("kernels: f16 widening is exact for every half value", "[kernels]") {
  // All 65536 bit patterns as a 256 x 256 matrix; then odd shapes for the tails.
  std::vector<uint16_t> all(1 << 16);
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const auto expect_widened = [](const std::vector<float>& out, const uint16_t* in, size_t n) {
    size_t bad = 0;
    while (bad < n) {
      const float expected = HalfToFloat(in[bad]);
      // A signalling NaN may come out quieted.
      const bool same = std::isnan(expected) ? std::isnan(out[bad])
                                             : std::bit_cast<uint32_t>(out[bad]) ==
                                                   std::bit_cast<uint32_t>(expected);
      if (!same) break;
      ++bad;
    }
    INFO("half bits " << (bad < n ? in[bad] : 0) << " widened to " << (bad < n ? out[bad] : 0));
    REQUIRE(bad == n);
  };
  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    INFO("kernels " << variant.label);
    std::vector<float> out(all.size());
    variant.set->to_f32_f16(out.data(), all.data(), 256, 0, 256);
    expect_widened(out, all.data(), all.size());
    for (int64_t cols : {1, 7, 15, 17, 33}) {
      std::vector<float> tail((9 - 2) * cols + 1, -1.0f);
      variant.set->to_f32_f16(tail.data(), all.data() + 0x3b00, cols, 2, 9);
      expect_widened(tail, all.data() + 0x3b00 + 2 * cols, (9 - 2) * cols);
      REQUIRE(tail.back() == -1.0f);  // nothing written past the rows asked for
    }
  }
}

TEST_CASE("kernels: q8_0 widening is scale times q", "[kernels]") {
  const int64_t rows = 7, cols = 96;
  const Matrix m = RandomMatrix(WeightFormat::kQ8_0, rows, cols, 11);
  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    INFO("kernels " << variant.label);
    for (const auto& [r0, r1] : {std::pair<int64_t, int64_t>{0, rows}, {3, 4}, {1, 6}}) {
      std::vector<float> out((r1 - r0) * cols + 1, -1.0f);
      variant.set->to_f32_q8_0(out.data(), m.q8.data(), cols, r0, r1);
      std::vector<float> expected(out.size(), -1.0f);
      for (int64_t i = 0; i < (r1 - r0) * cols; ++i) {
        const BlockQ8_0& block = m.q8[(r0 * cols + i) / kQ8BlockSize];
        expected[i] = HalfToFloat(block.scale) * block.q[i % kQ8BlockSize];
      }
      REQUIRE(FirstBitDifference(out, expected) == -1);
    }
  }
}

TEST_CASE("kernels: quantize_q8_0 is bit-identical to its definition in every set", "[kernels]") {
  const std::vector<float> x = QuantizeEdgeCases();
  const std::vector<BlockQ8_0> expected = QuantizeByDefinition(x);
  // Hand-checked: the ties block (d = 1) and the d = 0.5 block.
  REQUIRE(expected[0].scale == 0);
  REQUIRE(expected[2].scale == 0x3c00);
  const int8_t ties[] = {127, 2, 4, -2, -4, 0, 0, 2, -2, 126, -126, 0, -127};
  REQUIRE(std::equal(std::begin(ties), std::end(ties), expected[2].q));  // ties to even
  REQUIRE(expected[3].scale == 0x3800);
  const int8_t half_ties[] = {127, -2, 2, -2, 0};
  REQUIRE(std::equal(std::begin(half_ties), std::end(half_ties), expected[3].q));
  REQUIRE(expected[4].scale == 0x7bff);  // 3e38: the scale saturates at 65504
  REQUIRE(expected[4].q[5] == 127);

  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    INFO("kernels " << variant.label);
    std::vector<BlockQ8_0> out(expected.size());
    variant.set->quantize_q8_0(out.data(), x.data(), static_cast<int64_t>(x.size()));
    const int64_t diff = FirstBitDifference(out, expected);
    INFO("first differing block " << diff);
    REQUIRE(diff == -1);
  }
}

TEST_CASE("kernels: gemv gives a row the same bits whatever range computes it", "[kernels]") {
  const int64_t rows = 13;
  // Ranges of odd lengths at odd offsets: a kernel that batched rows (say four at a time, sharing
  // the loads of x) would give the rows of a partial batch to different code.
  const std::vector<std::vector<int64_t>> splits = {{0, 3, 4, 9, 13}, {0, 5, 6, 13}, {0, 1, 2, 13}};
  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    for (WeightFormat format : kFormats) {
      for (int64_t cols : ColsFor(format)) {
        INFO("kernels " << variant.label << ", " << WeightFormatName(format) << ", cols " << cols);
        const Matrix m = RandomMatrix(format, rows, cols, 100 + static_cast<uint32_t>(cols));
        const Activation x = RandomActivation(*variant.set, format, cols, 200);
        const std::vector<float> whole = GemvAll(*variant.set, m, x);

        const float sentinel = std::bit_cast<float>(0x7fc01234u);
        std::vector<float> one_by_one(rows, sentinel);
        for (int64_t r = 0; r < rows; ++r) {
          Gemv(*variant.set, m, x, one_by_one.data(), r, r + 1);
          // Only y[r] is written.
          if (r + 1 < rows) REQUIRE(std::bit_cast<uint32_t>(one_by_one[r + 1]) == 0x7fc01234u);
        }
        REQUIRE(FirstBitDifference(whole, one_by_one) == -1);

        for (const std::vector<int64_t>& split : splits) {
          std::vector<float> pieces(rows, sentinel);
          for (size_t i = 0; i + 1 < split.size(); ++i) {
            Gemv(*variant.set, m, x, pieces.data(), split[i], split[i + 1]);
          }
          REQUIRE(FirstBitDifference(whole, pieces) == -1);
        }
      }
    }
  }
}

TEST_CASE("kernels: gemv matches a float64 reference and the portable set", "[kernels]") {
  const int64_t rows = 9;
  for (WeightFormat format : kFormats) {
    for (int64_t cols : ColsFor(format)) {
      const Matrix m = RandomMatrix(format, rows, cols, 300 + static_cast<uint32_t>(cols));
      // q8_0's reference multiplies the dequantized weights and activations, exactly what the
      // kernels multiply, so only float rounding separates them.
      const Activation x = RandomActivation(kernels::kPortable, format, cols, 400);
      std::vector<double> reference(rows), magnitude(rows);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          const double product = m.values[r * cols + c] * x.values[c];
          reference[r] += product;
          magnitude[r] += std::abs(product);
        }
      }
      const std::vector<float> portable = GemvAll(kernels::kPortable, m, x);
      for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
        INFO("kernels " << variant.label << ", " << WeightFormatName(format) << ", cols " << cols);
        const std::vector<float> y = GemvAll(*variant.set, m, x);
        for (int64_t r = 0; r < rows; ++r) {
          INFO("row " << r << ": " << y[r] << " vs reference " << reference[r] << ", portable "
                      << portable[r] << ", sum |w x| " << magnitude[r]);
          REQUIRE(std::abs(y[r] - reference[r]) <= 2e-6 * magnitude[r] + 1e-30);
          REQUIRE(std::abs(y[r] - double{portable[r]}) <= 1e-5 * magnitude[r] + 1e-6);
        }
      }
    }
  }
}

TEST_CASE("kernels: variants of one set agree bit for bit", "[kernels]") {
  // avx512 with and without VNNI, neon with and without dotprod: only the q8_0 product differs.
  const std::vector<KernelVariant> variants = kernels::RunnableKernelVariants();
  for (size_t i = 0; i < variants.size(); ++i) {
    for (size_t j = i + 1; j < variants.size(); ++j) {
      if (variants[i].set->name != variants[j].set->name) continue;
      INFO(variants[i].label << " vs " << variants[j].label);
      for (int64_t cols : kQ8Cols) {
        INFO("cols " << cols);
        const Matrix m = RandomMatrix(WeightFormat::kQ8_0, 11, cols, 500);
        const Activation x = RandomActivation(*variants[i].set, WeightFormat::kQ8_0, cols, 600);
        REQUIRE(FirstBitDifference(GemvAll(*variants[i].set, m, x),
                                   GemvAll(*variants[j].set, m, x)) == -1);
      }
    }
  }
}

TEST_CASE("kernels: pointers with only their type's alignment", "[kernels]") {
  // Every buffer one element past a 64-byte boundary: floats and halves at 4 and 2 bytes past
  // one, q8_0 blocks at 34.
  const int64_t rows = 6, cols = 96;
  for (const KernelVariant& variant : kernels::RunnableKernelVariants()) {
    INFO("kernels " << variant.label);
    for (WeightFormat format : kFormats) {
      INFO(WeightFormatName(format));
      const Matrix m = RandomMatrix(format, rows, cols, 700);
      const Activation x = RandomActivation(*variant.set, format, cols, 800);
      const std::vector<float> expected = GemvAll(*variant.set, m, x);

      struct alignas(64) Line {
        unsigned char bytes[64];
      };
      std::vector<Line> wbuf(m.values.size() * 4 / 64 + 4), xbuf(cols * 4 / 64 + 4),
          ybuf(rows * 4 / 64 + 4);
      auto* y = reinterpret_cast<float*>(ybuf.data()) + 1;
      auto* xf = reinterpret_cast<float*>(xbuf.data()) + 1;
      std::copy(x.f32.begin(), x.f32.end(), xf);
      switch (format) {
        case WeightFormat::kF32: {
          auto* w = reinterpret_cast<float*>(wbuf.data()) + 1;
          std::copy(m.f32.begin(), m.f32.end(), w);
          variant.set->gemv_f32(y, w, xf, cols, 0, rows);
          break;
        }
        case WeightFormat::kF16: {
          auto* w = reinterpret_cast<uint16_t*>(wbuf.data()) + 1;
          std::copy(m.f16.begin(), m.f16.end(), w);
          variant.set->gemv_f16(y, w, xf, cols, 0, rows);
          std::vector<float> widened(rows * cols);
          std::vector<float> widened_shifted(rows * cols + 1);
          variant.set->to_f32_f16(widened.data(), m.f16.data(), cols, 0, rows);
          variant.set->to_f32_f16(widened_shifted.data() + 1, w, cols, 0, rows);
          widened_shifted.erase(widened_shifted.begin());
          REQUIRE(FirstBitDifference(widened, widened_shifted) == -1);
          break;
        }
        case WeightFormat::kQ8_0: {
          auto* w = reinterpret_cast<BlockQ8_0*>(wbuf.data()) + 1;
          std::copy(m.q8.begin(), m.q8.end(), w);
          std::vector<Line> qbuf(cols / kQ8BlockSize * sizeof(BlockQ8_0) / 64 + 2);
          auto* xq = reinterpret_cast<BlockQ8_0*>(qbuf.data()) + 1;
          variant.set->quantize_q8_0(xq, xf, cols);
          REQUIRE(FirstBitDifference(x.q8, std::vector<BlockQ8_0>(xq, xq + cols / kQ8BlockSize)) ==
                  -1);
          variant.set->gemv_q8_0(y, w, xq, cols, 0, rows);
          std::vector<float> widened(rows * cols);
          std::vector<float> widened_shifted(rows * cols + 1);
          variant.set->to_f32_q8_0(widened.data(), m.q8.data(), cols, 0, rows);
          variant.set->to_f32_q8_0(widened_shifted.data() + 1, w, cols, 0, rows);
          widened_shifted.erase(widened_shifted.begin());
          REQUIRE(FirstBitDifference(widened, widened_shifted) == -1);
          break;
        }
      }
      REQUIRE(FirstBitDifference(std::vector<float>(y, y + rows), expected) == -1);
    }
  }
}
