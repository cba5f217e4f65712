// dgpt: one binary, one subcommand per job (generate, inspect, tokenize, ...).
#include <cstdio>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"DistributedGPT: run GPT-2 family models split across machines"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "dgpt 0.1.0");
  dgpt::cli::CommandRunner runner;
  dgpt::cli::AddBenchCommand(app, &runner);
  dgpt::cli::AddGenerateCommand(app, &runner);
  dgpt::cli::AddInspectCommand(app, &runner);
  dgpt::cli::AddPerplexityCommand(app, &runner);
  dgpt::cli::AddServeCommand(app, &runner);
  dgpt::cli::AddSplitCommand(app, &runner);
  dgpt::cli::AddTokenizeCommand(app, &runner);
  dgpt::cli::AddWorkerCommand(app, &runner);
  CLI11_PARSE(app, argc, argv);
  return runner ? runner() : 1;
}
