// Tests for the safetensors reader/writer and MappedFile. Malformed-file tests follow leveldb's
// log_test: write a valid file, corrupt it (a byte, the length, or the whole header), and check
// that Open fails with a one-line message that starts with the path and names the problem.
#include "engine/safetensors.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "engine/mapped_file.h"

namespace dgpt {
namespace {

namespace fs = std::filesystem;

// Unique per process and per call: ctest may run test cases as parallel processes.
std::string TempPath(const std::string& stem) {
  static int counter = 0;
  fs::create_directories(DGPT_TEST_TMP);
  return std::string(DGPT_TEST_TMP) + "/" + stem + "_" + std::to_string(::getpid()) + "_" +
         std::to_string(counter++) + ".safetensors";
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string LengthPrefix(uint64_t length) {
  std::string prefix(8, '\0');
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>(length >> (8 * i));
  return prefix;
}

void CheckOneLineErrorFor(const std::string& path, const std::string& message) {
  INFO(message);
  CHECK(message.rfind(path + ": ", 0) == 0);
  CHECK(message.find('\n') == std::string::npos);
  CHECK(message.find('\r') == std::string::npos);
}

// A file under test; removed when the test ends.
class SafetensorsFileTest {
 public:
  SafetensorsFileTest() : path_(TempPath("corrupt")) {}
  ~SafetensorsFileTest() {
    std::error_code ignored;
    fs::remove(path_, ignored);
    fs::remove(path_ + ".tmp", ignored);
  }

 protected:
  // "a": F32 [2, 2] at [0, 16); "b": I8 [8] at [16, 24).
  void WriteValid() {
    const std::vector<float> a = {1, 2, 3, 4};
    const std::vector<int8_t> b = {1, -2, 3, -4, 5, -6, 7, -8};
    Status status =
        WriteSafetensors(path_, {{"a", DType::kF32, {2, 2}, a.data(), a.size() * sizeof(float)},
                                 {"b", DType::kI8, {8}, b.data(), b.size()}});
    REQUIRE(status.ok());
  }
  // Replaces the whole file with a given header text and data section.
  void WriteHeader(const std::string& header_json, size_t data_section_bytes) {
    WriteBytes(path_, LengthPrefix(header_json.size()) + header_json +
                          std::string(data_section_bytes, '\x5a'));
  }
  void SetLengthPrefix(uint64_t length) {
    std::string bytes = ReadBytes(path_);
    bytes.replace(0, 8, LengthPrefix(length));
    WriteBytes(path_, bytes);
  }
  // Overwrites the first occurrence of `from` in the file with `to` (same length).
  void ReplaceInFile(const std::string& from, const std::string& to) {
    REQUIRE(from.size() == to.size());
    std::string bytes = ReadBytes(path_);
    size_t position = bytes.find(from);
    REQUIRE(position != std::string::npos);
    bytes.replace(position, from.size(), to);
    WriteBytes(path_, bytes);
  }
  void Truncate(size_t size) { fs::resize_file(path_, size); }

  // Opens the file, expecting failure; returns the message after checking its form.
  std::string OpenError() {
    Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
    REQUIRE_FALSE(file.ok());
    CheckOneLineErrorFor(path_, file.status().message());
    return file.status().message();
  }
  bool Opens() { return SafetensorsFile::Open(path_).ok(); }

  std::string path_;
};

// --- Round trips ------------------------------------------------------------------------------

TEST_CASE("Safetensors round trip keeps tensors of several dtypes, their order and metadata",
          "[safetensors]") {
  const std::string path = TempPath("round_trip");
  const std::vector<float> wte = {0.5f, -1.25f, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  const std::vector<uint16_t> half = {1, 2, 3, 4, 5};  // odd byte count: misaligns the next one
  const std::vector<uint16_t> brain = {7, 8, 9, 10, 11, 12};
  const std::vector<int64_t> ids = {-1, 0, int64_t{1} << 40};
  const std::vector<uint8_t> mask = {1, 0, 1, 1, 0, 0, 1};
  const std::vector<uint8_t> fp8 = {0x11, 0x22, 0x33, 0x44};
  const std::vector<double> doubles = {3.5};
  const std::vector<TensorToWrite> tensors = {
      {"wte", DType::kF32, {3, 4}, wte.data(), wte.size() * 4},
      {"half", DType::kF16, {5}, half.data(), half.size() * 2},
      {"brain", DType::kBF16, {2, 3}, brain.data(), brain.size() * 2},
      {"ids", DType::kI64, {3}, ids.data(), ids.size() * 8},
      {"mask", DType::kBool, {7}, mask.data(), mask.size()},
      {"fp8", DType::kF8E4M3, {2, 1, 2}, fp8.data(), fp8.size()},
      {"h.0.attn.c_attn.weight", DType::kF64, {1}, doubles.data(), 8},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "héllo"}};
  REQUIRE(WriteSafetensors(path, tensors, metadata).ok());
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const std::string bytes = ReadBytes(path);
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) header_bytes |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  CHECK((8 + header_bytes) % 8 == 0);  // data section aligned

  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  const SafetensorsFile& opened = **file;
  CHECK(opened.path() == path);
  CHECK(opened.metadata() == metadata);
  REQUIRE(opened.tensors().size() == tensors.size());
  uint64_t expected_begin = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& info = opened.tensors()[i];
    INFO(info.name);
    CHECK(info.name == tensors[i].name);
    CHECK(info.dtype == tensors[i].dtype);
    CHECK(info.shape == tensors[i].shape);
    CHECK(info.begin == expected_begin);  // written contiguously in the given order
    CHECK(info.num_bytes() == tensors[i].num_bytes);
    CHECK(std::memcmp(info.data, tensors[i].data, info.num_bytes()) == 0);
    CHECK(opened.Find(info.name) == &info);
    expected_begin = info.end;
  }
  CHECK(opened.Find("wte")->num_elements() == 12);
  CHECK(opened.Find("fp8")->num_elements() == 4);
  CHECK(opened.Find("missing") == nullptr);
  fs::remove(path);
}

TEST_CASE("Safetensors round trip keeps an empty tensor and a scalar", "[safetensors]") {
  const std::string path = TempPath("empty_scalar");
  const float scalar = 42.0f;
  const std::vector<int32_t> after = {7, 8};
  REQUIRE(WriteSafetensors(path, {{"empty", DType::kF32, {0}, nullptr, 0},
                                  {"scalar", DType::kF32, {}, &scalar, 4},
                                  {"empty_matrix", DType::kF16, {3, 0}, nullptr, 0},
                                  {"after", DType::kI32, {2}, after.data(), 8}})
              .ok());
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  const TensorInfo* empty = (*file)->Find("empty");
  REQUIRE(empty != nullptr);
  CHECK(empty->shape == std::vector<int64_t>{0});
  CHECK(empty->num_elements() == 0);
  CHECK(empty->num_bytes() == 0);
  const TensorInfo* scalar_info = (*file)->Find("scalar");
  REQUIRE(scalar_info != nullptr);
  CHECK(scalar_info->shape.empty());
  CHECK(scalar_info->num_elements() == 1);
  float read_back = 0;
  std::memcpy(&read_back, scalar_info->data, 4);
  CHECK(read_back == 42.0f);
  CHECK((*file)->Find("empty_matrix")->num_elements() == 0);
  CHECK(std::memcmp((*file)->Find("after")->data, after.data(), 8) == 0);
  CHECK((*file)->metadata().empty());
  fs::remove(path);
}

TEST_CASE("Safetensors file with no tensors opens", "[safetensors]") {
  const std::string path = TempPath("no_tensors");
  REQUIRE(WriteSafetensors(path, {}).ok());
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  CHECK((*file)->tensors().empty());
  fs::remove(path);
}

TEST_CASE("DType names, sizes and parsing cover every dtype", "[safetensors]") {
  const std::vector<std::pair<DType, size_t>> sizes = {
      {DType::kF64, 8},  {DType::kF32, 4},    {DType::kF16, 2},   {DType::kBF16, 2},
      {DType::kI64, 8},  {DType::kI32, 4},    {DType::kI16, 2},   {DType::kI8, 1},
      {DType::kU64, 8},  {DType::kU32, 4},    {DType::kU16, 2},   {DType::kU8, 1},
      {DType::kBool, 1}, {DType::kF8E4M3, 1}, {DType::kF8E5M2, 1}};
  for (const auto& [dtype, size] : sizes) {
    INFO(DTypeName(dtype));
    CHECK(DTypeSize(dtype) == size);
    Result<DType> parsed = ParseDType(DTypeName(dtype));
    REQUIRE(parsed.ok());
    CHECK(*parsed == dtype);
  }
  CHECK(DTypeName(DType::kBF16) == "BF16");
  CHECK(DTypeName(DType::kF8E5M2) == "F8_E5M2");
  Result<DType> lower_case = ParseDType("f32");
  REQUIRE_FALSE(lower_case.ok());
  CHECK_THAT(lower_case.status().message(), Catch::Contains("unknown dtype \"f32\""));
}

// --- Malformed files --------------------------------------------------------------------------

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a missing file says it cannot open it",
                 "[safetensors]") {
  CHECK(OpenError() == path_ + ": cannot open: No such file or directory");
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a file shorter than 8 bytes says truncated",
                 "[safetensors]") {
  WriteBytes(path_, std::string("\x05\x00\x00", 3));
  CHECK_THAT(OpenError(), Catch::Contains("truncated: 3 bytes"));
  WriteBytes(path_, "");
  CHECK_THAT(OpenError(), Catch::Contains("truncated: 0 bytes"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a header length past the end says both numbers",
                 "[safetensors]") {
  WriteValid();
  const uint64_t file_size = fs::file_size(path_);
  SetLengthPrefix(1000);
  const std::string message = OpenError();
  CHECK_THAT(message, Catch::Contains("header length 1000 is past the end of the file"));
  CHECK_THAT(message, Catch::Contains("only " + std::to_string(file_size - 8) + " bytes"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a file truncated inside the header says so",
                 "[safetensors]") {
  WriteValid();
  Truncate(20);
  CHECK_THAT(OpenError(), Catch::Contains("is past the end of the file (only 12 bytes"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of an absurd header length refuses it",
                 "[safetensors]") {
  WriteValid();
  SetLengthPrefix(uint64_t{1} << 40);
  CHECK_THAT(OpenError(), Catch::Contains("header length 1099511627776 is absurd"));
  SetLengthPrefix(~uint64_t{0});
  CHECK_THAT(OpenError(), Catch::Contains("is absurd"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of bad JSON gives the parser's reason on one line",
                 "[safetensors]") {
  WriteHeader("{\"a\": {\"dtype\": \"F32\",", 0);
  std::string message = OpenError();
  CHECK_THAT(message, Catch::Contains("header is not valid JSON: parse error"));
  CHECK_THAT(message, Catch::Contains("unexpected end of input"));

  // The parser echoes the bad token; a newline and raw bytes in it must not split the line.
  WriteHeader("{\"a\nb\xff\x01", 0);
  CHECK_THAT(OpenError(), Catch::Contains("header is not valid JSON"));

  // Padding must be spaces: trailing garbage after the object is an error.
  WriteHeader("{}  x", 0);
  CHECK_THAT(OpenError(), Catch::Contains("header is not valid JSON"));

  WriteHeader("", 0);
  CHECK_THAT(OpenError(), Catch::Contains("header is not valid JSON"));

  // Nesting is bounded: a corrupt header must not make the parser allocate per level.
  WriteHeader(std::string(100000, '['), 0);
  CHECK_THAT(OpenError(), Catch::Contains("header JSON nests deeper than 64 levels"));
  WriteHeader(R"({"t": {"dtype": "U8", "shape": [[[1]]], "data_offsets": [0, 1]}})", 1);
  CHECK_THAT(OpenError(), Catch::Contains("\"shape\" holds a non-integer: [[1]]"));

  // A huge string in the header must not produce a huge message.
  WriteHeader("{\"" + std::string(100000, 'x'), 0);
  CHECK(OpenError().size() < 1000);
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open accepts a header padded with trailing spaces",
                 "[safetensors]") {
  WriteHeader(
      R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})" + std::string(13, ' '), 2);
  CHECK(Opens());
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a header that is not an object names its type",
                 "[safetensors]") {
  WriteHeader("[1, 2]", 0);
  CHECK_THAT(OpenError(), Catch::Contains("header is not a JSON object but array"));
  WriteHeader("\"text\"", 0);
  CHECK_THAT(OpenError(), Catch::Contains("header is not a JSON object but string"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of an entry that is not an object names the tensor",
                 "[safetensors]") {
  WriteHeader(R"({"wpe.weight": 5})", 0);
  CHECK_THAT(OpenError(),
             Catch::Contains("tensor \"wpe.weight\": entry is not an object but number"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of entries with missing or wrong-typed fields",
                 "[safetensors]") {
  struct Case {
    std::string header;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {R"({"t": {"shape": [2], "data_offsets": [0, 8]}})", "tensor \"t\": missing \"dtype\""},
      {R"({"t": {"dtype": 3, "shape": [2], "data_offsets": [0, 8]}})",
       "tensor \"t\": \"dtype\" is not a string"},
      {R"({"t": {"dtype": "F32", "data_offsets": [0, 8]}})", "tensor \"t\": missing \"shape\""},
      {R"({"t": {"dtype": "F32", "shape": "2", "data_offsets": [0, 8]}})",
       "tensor \"t\": \"shape\" is not an array"},
      {R"({"t": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})",
       "tensor \"t\": \"shape\" holds a non-integer: 2.5"},
      {R"({"t": {"dtype": "F32", "shape": [null], "data_offsets": [0, 8]}})",
       "tensor \"t\": \"shape\" holds a non-integer: null"},
      {R"({"t": {"dtype": "F32", "shape": [2]}})", "tensor \"t\": missing \"data_offsets\""},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}})",
       "tensor \"t\": \"data_offsets\" is not a [begin, end] pair"},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": {"begin": 0}}})",
       "tensor \"t\": \"data_offsets\" is not a [begin, end] pair"},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})",
       "tensor \"t\": \"data_offsets\" must hold two non-negative integers"},
      {R"({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8.0]}})",
       "tensor \"t\": \"data_offsets\" must hold two non-negative integers"},
  };
  for (const Case& c : cases) {
    INFO(c.header);
    WriteHeader(c.header, 8);
    CHECK_THAT(OpenError(), Catch::Contains(c.expected));
  }
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of an unknown dtype names it and the tensor",
                 "[safetensors]") {
  WriteValid();
  ReplaceInFile("\"F32\"", "\"F33\"");  // a corrupted byte inside a valid file
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"a\": unknown dtype \"F33\""));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a negative dimension names it", "[safetensors]") {
  WriteHeader(R"({"t": {"dtype": "F32", "shape": [2, -2], "data_offsets": [0, 8]}})", 8);
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"t\": negative dimension -2 in shape [2, -2]"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of an overflowing element count refuses it",
                 "[safetensors]") {
  WriteHeader(R"({"t": {"dtype": "F32", "shape": [4294967296, 4294967296], )"
              R"("data_offsets": [0, 8]}})",
              8);
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"t\": element count of shape"));
  WriteHeader(R"({"t": {"dtype": "F64", "shape": [4611686018427387904], )"
              R"("data_offsets": [0, 8]}})",
              8);
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"t\": byte size of shape"));
  WriteHeader(R"({"t": {"dtype": "U8", "shape": [18446744073709551615], )"
              R"("data_offsets": [0, 8]}})",
              8);
  CHECK_THAT(OpenError(), Catch::Contains("dimension 18446744073709551615 is too large"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of data_offsets with begin after end says so",
                 "[safetensors]") {
  WriteHeader(R"({"t": {"dtype": "U8", "shape": [8], "data_offsets": [16, 8]}})", 16);
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"t\": data_offsets begin 16 > end 8"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a tensor ending past the data section says so",
                 "[safetensors]") {
  WriteValid();
  Truncate(fs::file_size(path_) - 4);  // "b" now ends 4 bytes past the end
  CHECK_THAT(OpenError(),
             Catch::Contains("tensor \"b\": data_offsets end 24 is past the end of the data "
                             "section (20 bytes)"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of a shape that disagrees with the byte size says both",
                 "[safetensors]") {
  WriteValid();
  ReplaceInFile("[2,2]", "[2,3]");
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"a\": shape [2, 3] of F32 needs 24 bytes but "
                                          "data_offsets [0, 16] span 16"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of overlapping tensors names both", "[safetensors]") {
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
              R"( "b": {"dtype": "U8", "shape": [12], "data_offsets": [12, 24]}})",
              24);
  CHECK_THAT(OpenError(), Catch::Contains("tensors \"a\" (data_offsets [0, 16]) and \"b\" "
                                          "(data_offsets [12, 24]) overlap"));
  // The same bytes claimed twice, the second tensor listed first in the header.
  WriteHeader(R"({"z": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]},)"
              R"( "y": {"dtype": "I8", "shape": [8], "data_offsets": [0, 8]}})",
              8);
  const std::string message = OpenError();
  CHECK_THAT(message,
             Catch::Contains("\"z\"") && Catch::Contains("\"y\"") && Catch::Contains("overlap"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of data bytes no tensor covers says which",
                 "[safetensors]") {
  // A hole between two tensors.
  WriteHeader(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},)"
              R"( "b": {"dtype": "U8", "shape": [4], "data_offsets": [20, 24]}})",
              24);
  CHECK_THAT(OpenError(), Catch::Contains("data section bytes [16, 20) belong to no tensor"));
  // A hole at the start.
  WriteHeader(R"({"b": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})", 8);
  CHECK_THAT(OpenError(), Catch::Contains("data section bytes [0, 4) belong to no tensor"));
  // Extra bytes at the end of an otherwise valid file.
  WriteValid();
  WriteBytes(path_, ReadBytes(path_) + "trailing");
  CHECK_THAT(OpenError(), Catch::Contains("data section bytes [24, 32) at its end"));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of duplicate tensor names names the tensor",
                 "[safetensors]") {
  WriteHeader(R"({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},)"
              R"( "a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}})",
              8);
  CHECK_THAT(OpenError(), Catch::Contains("duplicate tensor name \"a\""));
  WriteHeader(R"({"a": {"dtype": "U8", "dtype": "I8", "shape": [4], "data_offsets": [0, 4]}})", 4);
  CHECK_THAT(OpenError(), Catch::Contains("duplicate key \"dtype\""));
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of bad __metadata__ says what is wrong",
                 "[safetensors]") {
  WriteHeader(R"({"__metadata__": [1]})", 0);
  CHECK_THAT(OpenError(), Catch::Contains("\"__metadata__\" is not an object but array"));
  WriteHeader(R"({"__metadata__": {"format": "pt", "epoch": 3}})", 0);
  CHECK_THAT(OpenError(),
             Catch::Contains("\"__metadata__\" value for key \"epoch\" is not a string"));
  WriteHeader(R"({"__metadata__": {}, "__metadata__": {}})", 0);
  CHECK_THAT(OpenError(), Catch::Contains("duplicate key \"__metadata__\""));
  WriteHeader(R"({"__metadata__": null})", 0);  // optional in the reference library
  CHECK(Opens());
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of odd tensor names keeps the error on one line",
                 "[safetensors]") {
  WriteHeader(R"({"bad\nname\u0000": 1})", 0);
  CHECK_THAT(OpenError(), Catch::Contains("tensor \"bad\\x0aname\\x00\": entry is not an object"));
}

// --- Random input -----------------------------------------------------------------------------

TEST_CASE_METHOD(SafetensorsFileTest, "Open of random bytes never crashes", "[safetensors]") {
  std::mt19937 random(20240601);
  const std::string json_alphabet = "{}[]\",:0123456789-. eE\"dtypeshapedata_offsetsF32U8\n";
  for (int iteration = 0; iteration < 400; ++iteration) {
    const size_t size = std::uniform_int_distribution<size_t>(0, 300)(random);
    std::string bytes(size, '\0');
    const bool json_like = iteration % 2 == 0;
    for (char& c : bytes) {
      c = json_like ? json_alphabet[random() % json_alphabet.size()]
                    : static_cast<char>(random() & 0xff);
    }
    // Half the time make the length field plausible so the JSON parser gets exercised.
    if (size >= 8 && iteration % 4 < 2) {
      const uint64_t length = std::uniform_int_distribution<uint64_t>(0, size - 8)(random);
      bytes.replace(0, 8, LengthPrefix(length));
      if (length > 0) bytes[8] = '{';
    }
    WriteBytes(path_, bytes);
    Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
    if (!file.ok()) CheckOneLineErrorFor(path_, file.status().message());
  }
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of every truncation of a valid file fails cleanly",
                 "[safetensors]") {
  WriteValid();
  const std::string valid = ReadBytes(path_);
  for (size_t size = 0; size < valid.size(); ++size) {
    WriteBytes(path_, valid.substr(0, size));
    INFO("size " << size);
    OpenError();
  }
  WriteBytes(path_, valid);
  CHECK(Opens());
}

TEST_CASE_METHOD(SafetensorsFileTest, "Open of randomly corrupted valid files never crashes",
                 "[safetensors]") {
  WriteValid();
  const std::string valid = ReadBytes(path_);
  std::mt19937 random(7);
  int opened = 0;
  for (int iteration = 0; iteration < 400; ++iteration) {
    std::string bytes = valid;
    const int flips = 1 + static_cast<int>(random() % 4);
    for (int i = 0; i < flips; ++i) {
      bytes[random() % bytes.size()] = static_cast<char>(random() & 0xff);
    }
    if (iteration % 3 == 0) bytes.resize(random() % (bytes.size() + 1));
    WriteBytes(path_, bytes);
    Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path_);
    if (file.ok()) {
      ++opened;  // e.g. a flipped tensor byte; every tensor must still lie inside the file
      for (const TensorInfo& tensor : (*file)->tensors()) {
        CHECK(tensor.end <= bytes.size());
      }
    } else {
      CheckOneLineErrorFor(path_, file.status().message());
    }
  }
  CHECK(opened > 0);
}

// --- Writer -----------------------------------------------------------------------------------

TEST_CASE("WriteSafetensors refuses a byte count that disagrees with the shape", "[safetensors]") {
  const std::string path = TempPath("write_mismatch");
  const std::vector<float> values(3);
  Status status = WriteSafetensors(path, {{"w", DType::kF32, {3}, values.data(), 8}});
  REQUIRE_FALSE(status.ok());
  CheckOneLineErrorFor(path, status.message());
  CHECK_THAT(status.message(),
             Catch::Contains("tensor \"w\": shape [3] of F32 needs 12 bytes but 8 were given"));
  CHECK_FALSE(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));
}

TEST_CASE("WriteSafetensors refuses bad tensors", "[safetensors]") {
  const std::string path = TempPath("write_bad");
  const std::vector<uint8_t> bytes(4);
  struct Case {
    std::vector<TensorToWrite> tensors;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{{"n", DType::kU8, {-4}, bytes.data(), 4}}, "tensor \"n\": negative dimension -4"},
      {{{"d", DType::kU8, {4}, bytes.data(), 4}, {"d", DType::kU8, {4}, bytes.data(), 4}},
       "duplicate tensor name \"d\""},
      {{{"__metadata__", DType::kU8, {4}, bytes.data(), 4}}, "reserved for metadata"},
      {{{"z", DType::kU8, {4}, nullptr, 4}}, "tensor \"z\": data is null"},
      {{{"bad\xff", DType::kU8, {4}, bytes.data(), 4}}, "not valid UTF-8"},
  };
  for (const Case& c : cases) {
    INFO(c.expected);
    Status status = WriteSafetensors(path, c.tensors);
    REQUIRE_FALSE(status.ok());
    CheckOneLineErrorFor(path, status.message());
    CHECK_THAT(status.message(), Catch::Contains(c.expected));
    CHECK_FALSE(fs::exists(path));
  }
}

TEST_CASE("WriteSafetensors into a missing directory says it cannot create the file",
          "[safetensors]") {
  const std::string path = std::string(DGPT_TEST_TMP) + "/no_such_dir/x.safetensors";
  Status status = WriteSafetensors(path, {});
  REQUIRE_FALSE(status.ok());
  CheckOneLineErrorFor(path, status.message());
  CHECK_THAT(status.message(), Catch::Contains("cannot create " + path + ".tmp: No such file"));
}

TEST_CASE("WriteSafetensors replaces an existing file", "[safetensors]") {
  const std::string path = TempPath("replace");
  WriteBytes(path, "old contents");
  const uint8_t value = 9;
  REQUIRE(WriteSafetensors(path, {{"v", DType::kU8, {1}, &value, 1}}).ok());
  Result<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  REQUIRE(file.ok());
  CHECK(std::to_integer<uint8_t>(*(*file)->Find("v")->data) == 9);
  fs::remove(path);
}

// --- MappedFile -------------------------------------------------------------------------------

TEST_CASE("MappedFile of a missing file says it cannot open it", "[mapped_file]") {
  const std::string path = std::string(DGPT_TEST_TMP) + "/definitely_missing_file";
  Result<MappedFile> file = MappedFile::Open(path);
  REQUIRE_FALSE(file.ok());
  CHECK(file.status().message() == path + ": cannot open: No such file or directory");
}

TEST_CASE("MappedFile of an empty file has size 0 and no data", "[mapped_file]") {
  const std::string path = TempPath("empty_file");
  WriteBytes(path, "");
  Result<MappedFile> file = MappedFile::Open(path);
  REQUIRE(file.ok());
  CHECK(file->size() == 0);
  CHECK(file->data() == nullptr);
  fs::remove(path);
}

TEST_CASE("MappedFile of a directory says it is not a regular file", "[mapped_file]") {
  fs::create_directories(DGPT_TEST_TMP);
  Result<MappedFile> file = MappedFile::Open(DGPT_TEST_TMP);
  REQUIRE_FALSE(file.ok());
  CHECK(file.status().message() == std::string(DGPT_TEST_TMP) + ": not a regular file");
}

TEST_CASE("MappedFile maps the contents and moves the mapping", "[mapped_file]") {
  const std::string path = TempPath("contents");
  WriteBytes(path, "hello mapping");
  Result<MappedFile> opened = MappedFile::Open(path);
  REQUIRE(opened.ok());
  MappedFile file = std::move(opened).value();
  REQUIRE(file.size() == 13);
  CHECK(std::memcmp(file.data(), "hello mapping", 13) == 0);

  MappedFile moved(std::move(file));
  CHECK(file.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  CHECK(file.size() == 0);
  CHECK(std::memcmp(moved.data(), "hello", 5) == 0);

  MappedFile assigned;
  assigned = std::move(moved);
  CHECK(assigned.size() == 13);
  CHECK(moved.data() == nullptr);  // NOLINT(bugprone-use-after-move)
  fs::remove(path);
}

}  // namespace
}  // namespace dgpt
