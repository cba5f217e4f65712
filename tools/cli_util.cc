#include "tools/cli_util.h"

#include <fmt/format.h>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <fstream>
#include <nlohmann/json.hpp>

namespace dgpt::cli {

int ReportError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "dgpt %s: %s\n", command.c_str(), message.c_str());
  return 1;
}

Result<std::vector<TokenId>> ParseTokenIds(const std::string& text) {
  std::vector<TokenId> ids;
  size_t i = 0;
  while (i < text.size()) {
    if (text[i] == ',' || std::isspace(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < text.size() && text[end] != ',' &&
           !std::isspace(static_cast<unsigned char>(text[end]))) {
      ++end;
    }
    const std::string word = text.substr(i, end - i);
    char* parse_end = nullptr;
    errno = 0;
    const long value = std::strtol(word.c_str(), &parse_end, 10);
    if (*parse_end != '\0' || errno != 0 || value < 0 || value > INT32_MAX) {
      return Status::Error("\"" + word + "\" is not a token id (expected a number >= 0)");
    }
    ids.push_back(static_cast<TokenId>(value));
    i = end;
  }
  return ids;
}

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return fmt::format("{:.2f} GiB", bytes / double(1ull << 30));
  if (bytes >= (1ull << 20)) return fmt::format("{:.1f} MiB", bytes / double(1ull << 20));
  if (bytes >= (1ull << 10)) return fmt::format("{:.1f} KiB", bytes / double(1ull << 10));
  return fmt::format("{} B", bytes);
}

void WarnIfRandomModel(const std::string& model_dir) {
  std::ifstream in(model_dir + "/config.json");
  const nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_object() && config.contains("dgpt_random_seed")) {
    std::fprintf(stderr,
                 "note: %s has random weights (made by weights/make_random_model.py): its output "
                 "is meaningless text\n",
                 model_dir.c_str());
  }
}

void AddWeightFormatOptions(CLI::App* command, WeightFormatArgs* args, bool with_head) {
  command->add_option("--dtype", args->dtype,
                      "Weight format to compute in: f32, f16 or q8_0 (blocks of 32 int8 with one "
                      "scale); default: as the checkpoint stores them");
  if (with_head) {
    command->add_option("--head-dtype", args->head_dtype,
                        "Format of the LM head (and of wte when tied): f32, f16 or q8_0; "
                        "default: as --dtype");
  }
}

Status ApplyWeightFormats(const WeightFormatArgs& args, LoadOptions* load) {
  auto parse = [](const std::string& flag, const std::string& name,
                  std::optional<WeightFormat>* out) -> Status {
    if (name.empty()) return Status::Ok();
    WeightFormat format;
    if (!ParseWeightFormat(name, &format)) {
      return Status::Error(flag + " \"" + name + "\" is not one of f32, f16, q8_0");
    }
    *out = format;
    return Status::Ok();
  };
  DGPT_RETURN_IF_ERROR(parse("--dtype", args.dtype, &load->weight_format));
  return parse("--head-dtype", args.head_dtype, &load->head_format);
}

}  // namespace dgpt::cli
