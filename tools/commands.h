// Each `dgpt` subcommand registers itself on the CLI11 app; main() runs the one chosen.
// A command's callback returns the process exit status (0 ok, 1 error with a one-line message).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace dgpt::cli {

using CommandRunner = std::function<int()>;

// Each adds a subcommand to `app` and sets *runner when that subcommand is selected.
void AddBenchCommand(CLI::App& app, CommandRunner* runner);
void AddGenerateCommand(CLI::App& app, CommandRunner* runner);
void AddInspectCommand(CLI::App& app, CommandRunner* runner);
void AddPerplexityCommand(CLI::App& app, CommandRunner* runner);
void AddServeCommand(CLI::App& app, CommandRunner* runner);
void AddSplitCommand(CLI::App& app, CommandRunner* runner);
void AddTokenizeCommand(CLI::App& app, CommandRunner* runner);
void AddWorkerCommand(CLI::App& app, CommandRunner* runner);

}  // namespace dgpt::cli
