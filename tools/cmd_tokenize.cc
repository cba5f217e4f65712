// `dgpt tokenize`: text -> token ids, or with --decode ids -> text, using a model's tokenizer.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dgpt::cli {
namespace {

struct TokenizeOptions {
  std::string model_dir;
  bool decode = false;
  bool no_special = false;
  std::vector<std::string> inputs;  // TEXT, or ids with --decode; empty or "-" means stdin
};

int Fail(const std::string& message) {
  return ReportError("tokenize", message);
}

Result<std::string> ReadStdin() {
  std::string contents;
  char buffer[1 << 16];
  size_t count = 0;
  while ((count = std::fread(buffer, 1, sizeof(buffer), stdin)) > 0) contents.append(buffer, count);
  if (std::ferror(stdin)) {
    return Status::Error(std::string("cannot read stdin: ") + std::strerror(errno));
  }
  return contents;
}

// The command-line arguments joined by spaces (as a shell would have passed unquoted text), or
// all of stdin when there are none or just "-".
Result<std::string> ReadInput(const std::vector<std::string>& inputs) {
  if (inputs.empty() || (inputs.size() == 1 && inputs[0] == "-")) return ReadStdin();
  std::string joined;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) joined += ' ';
    joined += inputs[i];
  }
  return joined;
}

Status WriteStdout(const std::string& bytes) {
  std::fwrite(bytes.data(), 1, bytes.size(), stdout);
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    return Status::Error(std::string("cannot write to stdout: ") + std::strerror(errno));
  }
  return Status::Ok();
}

int RunTokenize(const TokenizeOptions& options) {
  if (options.model_dir.empty()) return Fail("--model DIR is required");
  auto tokenizer = LoadTokenizer(options.model_dir);
  if (!tokenizer.ok()) return Fail(tokenizer.status().message());
  auto input = ReadInput(options.inputs);
  if (!input.ok()) return Fail(input.status().message());

  std::string output;
  if (options.decode) {
    auto ids = ParseTokenIds(*input);
    if (!ids.ok()) return Fail(ids.status().message());
    auto text = (*tokenizer)->Decode(*ids);  // rejects ids outside the vocabulary
    if (!text.ok()) return Fail(text.status().message());
    output = std::move(text).value();
  } else {
    const std::vector<TokenId> ids = (*tokenizer)->Encode(*input, !options.no_special);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) output += ' ';
      output += std::to_string(ids[i]);
    }
    output += '\n';
  }
  const Status written = WriteStdout(output);
  if (!written.ok()) return Fail(written.message());
  return 0;
}

}  // namespace

void AddTokenizeCommand(CLI::App& app, CommandRunner* runner) {
  auto options = std::make_shared<TokenizeOptions>();
  CLI::App* command = app.add_subcommand(
      "tokenize", "Print the token ids of TEXT (or stdin), or with --decode the text of ids");
  command->add_option(
      "--model", options->model_dir,
      "Model folder holding vocab.json + merges.txt, or tokenizer.model (required)");
  command->add_flag("--decode", options->decode,
                    "Read token ids (space or comma separated) and write the bytes they stand for");
  command->add_flag("--no-special", options->no_special,
                    "Encode special-token text such as <|endoftext|> as plain text");
  command->add_option("input", options->inputs,
                      "TEXT to encode (ids with --decode); '-' or nothing reads stdin");
  command->callback([options, runner] {
    *runner = [options] {
      // A command reports failure as exit status 1 with one line; nothing may escape main.
      try {
        return RunTokenize(*options);
      } catch (const std::exception& e) {
        return Fail(e.what());
      }
    };
  });
}

}  // namespace dgpt::cli
