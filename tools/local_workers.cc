#include "tools/local_workers.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <chrono>
#include <fstream>
#include <thread>

namespace dgpt::cli {
namespace {

constexpr int kAnnounceFd = 3;
constexpr int kStartTimeoutMs = 60000;

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

// Reads "PORT\n" from the child's announce pipe; 0 if it exits or times out first.
int ReadAnnouncedPort(int fd) {
  std::string text;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  while (text.find('\n') == std::string::npos) {
    const int remaining = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                               deadline - std::chrono::steady_clock::now())
                                               .count());
    if (remaining <= 0) return 0;
    pollfd descriptor{fd, POLLIN, 0};
    if (poll(&descriptor, 1, remaining) <= 0) return 0;
    char buffer[64];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) return 0;
    text.append(buffer, n);
  }
  return std::atoi(text.c_str());
}

}  // namespace

Result<std::unique_ptr<LocalWorkers>> LocalWorkers::Spawn(
    int count, const std::vector<std::string>& worker_args, const std::string& log_dir) {
  auto workers = std::unique_ptr<LocalWorkers>(new LocalWorkers());
  for (int k = 1; k <= count; ++k) {
    int pipe_fds[2];
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) return Status::Error("cannot create a pipe");
    const std::string log_path = fmt::format("{}/dgpt-worker-{}.log", log_dir, k);
    std::vector<std::string> args = {"dgpt",          "worker",
                                     "--listen",      "127.0.0.1:0",
                                     "--announce-fd", std::to_string(kAnnounceFd),
                                     "--name",        fmt::format("local-worker-{}", k)};
    args.insert(args.end(), worker_args.begin(), worker_args.end());
    const pid_t pid = fork();
    if (pid < 0) return Status::Error("cannot start a worker process (fork failed)");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      dup2(pipe_fds[1], kAnnounceFd);  // dup2 clears close-on-exec on the copy
      const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (log_fd >= 0) dup2(log_fd, STDERR_FILENO);
      const int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
      if (null_fd >= 0) {
        dup2(null_fd, STDIN_FILENO);
        dup2(null_fd, STDOUT_FILENO);
      }
      std::vector<char*> argv;
      for (std::string& arg : args) argv.push_back(arg.data());
      argv.push_back(nullptr);
      execv("/proc/self/exe", argv.data());
      _exit(127);
    }
    close(pipe_fds[1]);
    workers->pids_.push_back(pid);
    const int port = ReadAnnouncedPort(pipe_fds[0]);
    close(pipe_fds[0]);
    if (port <= 0) {
      const std::string reason = LastLine(log_path);
      return Status::Error(fmt::format("local worker {} did not start{}{} (log: {})", k,
                                       reason.empty() ? "" : ": ", reason, log_path));
    }
    workers->addresses_.push_back(fmt::format("127.0.0.1:{}", port));
  }
  return workers;
}

LocalWorkers::~LocalWorkers() {
  for (pid_t pid : pids_) kill(pid, SIGTERM);
  for (pid_t pid : pids_) {
    // A worker stops within a second on SIGTERM; don't let a stuck one hang us.
    for (int waited_ms = 0;; waited_ms += 20) {
      if (waitpid(pid, nullptr, WNOHANG) != 0) break;
      if (waited_ms >= 5000) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

}  // namespace dgpt::cli
