// Small helpers shared by the dgpt subcommands.
#pragma once

#include <string>
#include <vector>

#include "engine/status.h"
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

}  // namespace dgpt::cli
