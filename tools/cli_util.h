// Small helpers shared by the dgpt subcommands.
#pragma once

#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/status.h"
#include "engine/checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace dgpt::cli {

// Prints "dgpt COMMAND: MESSAGE" on one line to stderr and returns exit status 1.
int ReportError(const std::string& command, const std::string& message);

// Parses "1,2,3" or "1 2 3" into ids; a non-number is an error naming it.
Result<std::vector<TokenId>> ParseTokenIds(const std::string& text);

// "1.5 GiB", "12.0 MiB", "300 B".
std::string HumanBytes(uint64_t bytes);

// Prints a one-line note when DIR holds a random-weight model made by weights/make_random_model.py.
void WarnIfRandomModel(const std::string& model_dir);

// --dtype (and --head-dtype): the formats to compute in, whatever the checkpoint stores.
struct WeightFormatArgs {
  std::string dtype;       // "" = as stored
  std::string head_dtype;  // "" = as --dtype
};
void AddWeightFormatOptions(CLI::App* command, WeightFormatArgs* args, bool with_head);
// Sets load->weight_format / head_format; an unknown name is a one-line error.
Status ApplyWeightFormats(const WeightFormatArgs& args, LoadOptions* load);

}  // namespace dgpt::cli
