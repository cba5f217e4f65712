// `--local-workers N`: N `dgpt worker` processes on loopback, started from this same binary and
// stopped (SIGTERM, then SIGKILL) when the object goes away. Each child also gets SIGTERM if this
// process dies, so no worker outlives its coordinator.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "base/status.h"

namespace dgpt::cli {

class LocalWorkers {
 public:
  // `worker_args` are passed to every `dgpt worker` after --listen/--announce-fd, e.g.
  // {"--model", DIR, "--threads", "1"}. Worker logs go to LOG_DIR/dgpt-worker-K.log.
  static Result<std::unique_ptr<LocalWorkers>> Spawn(int count,
                                                     const std::vector<std::string>& worker_args,
                                                     const std::string& log_dir);
  ~LocalWorkers();

  const std::vector<std::string>& addresses() const { return addresses_; }

 private:
  LocalWorkers() = default;
  std::vector<pid_t> pids_;
  std::vector<std::string> addresses_;
};

}  // namespace dgpt::cli
