// dgpt worker: serve a range of layers to a coordinator (see net/PROTOCOL.md).
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "base/log.h"
#include "net/worker.h"
#include "tools/cli_util.h"
#include "tools/commands.h"

namespace dgpt::cli {
namespace {

struct WorkerArgs {
  net::WorkerOptions options;
  std::string auth_key_file;
  int idle_timeout_s = 300;
  int announce_fd = -1;
  WeightFormatArgs formats;
};

int RunWorker(WorkerArgs& args) {
  // SIGTERM/SIGINT are taken by sigwait below, so block them in every thread we start.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  if (!args.auth_key_file.empty()) {
    auto key = net::LoadAuthKey(args.auth_key_file);
    if (!key.ok()) return ReportError("worker", key.status().message());
    args.options.auth_key = *key;
  }
  args.options.idle_timeout = std::chrono::seconds(args.idle_timeout_s);
  LoadOptions load;
  if (Status status = ApplyWeightFormats(args.formats, &load); !status.ok()) {
    return ReportError("worker", status.message());
  }
  args.options.weight_format = load.weight_format;
  auto worker = net::Worker::Start(args.options);
  if (!worker.ok()) return ReportError("worker", worker.status().message());
  if (args.announce_fd >= 0) {  // tells a parent process (--local-workers) our port
    const std::string line = std::to_string(worker.value()->port()) + "\n";
    if (write(args.announce_fd, line.data(), line.size()) < 0) {
      return ReportError("worker", "cannot write to --announce-fd");
    }
    close(args.announce_fd);
  }
  int received = 0;
  sigwait(&signals, &received);
  Log("worker", "received {}, stopping", received == SIGTERM ? "SIGTERM" : "SIGINT");
  worker.value()->Stop();
  return 0;
}

}  // namespace

void AddWorkerCommand(CLI::App& app, CommandRunner* runner) {
  auto args = std::make_shared<WorkerArgs>();
  CLI::App* cmd = app.add_subcommand("worker", "Serve a range of layers to a coordinator");
  cmd->add_option("--listen,-l", args->options.listen, "HOST:PORT to listen on (port 0: any)")
      ->capture_default_str();
  cmd->add_option("--model,-m", args->options.model_dir,
                  "Model folder: a full checkpoint or a shard from `dgpt split`")
      ->required();
  cmd->add_option("--threads", args->options.threads, "Threads (default: all cores)");
  cmd->add_option("--max-sequences", args->options.max_sequences, "KV caches held at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--auth-key-file", args->auth_key_file,
                  "Pre-shared key: only peers with the same key may connect");
  cmd->add_option("--idle-timeout", args->idle_timeout_s,
                  "Seconds after which an untouched sequence is freed")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 24));
  AddWeightFormatOptions(cmd, &args->formats, /*with_head=*/false);
  cmd->add_option("--name", args->options.name, "Name in logs (default: the listen address)");
  cmd->add_option("--announce-fd", args->announce_fd, "Write the bound port to this fd")
      ->group("");  // internal: used by --local-workers
  cmd->callback([args, runner] { *runner = [args] { return RunWorker(*args); }; });
}

}  // namespace dgpt::cli
