// A persistent pool of worker threads for data-parallel kernels: threads are created once,
// so a decode step pays a wake-up, not a thread creation, per parallel region.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dgpt {

class ThreadPool {
 public:
  // num_threads counts the calling thread: 1 means everything runs inline.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(task) for task in [0, num_tasks), spread over the threads, and returns when all
  // are done. Tasks must be independent. Calls from several threads are serialized (a server
  // runs many sequences over one pool); a task must not call Run itself.
  void Run(int num_tasks, const std::function<void(int task)>& fn);

  // Splits [0, n) into num_threads() contiguous chunks whose boundaries are multiples of
  // `align`, and calls fn(begin, end) for each non-empty chunk in parallel.
  void ParallelFor(int64_t n, int64_t align, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void WorkerLoop(int worker_index);
  void DrainTasks(std::unique_lock<std::mutex>& lock);

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one Run at a time
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int)>* job_ = nullptr;
  int num_tasks_ = 0;
  int next_task_ = 0;
  int busy_workers_ = 0;
  // Written under mutex_; also read without it by threads spinning for the next region.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> unfinished_tasks_{0};
  bool stopping_ = false;
};

// Default thread count: every core the process may run on.
int DefaultThreadCount();

}  // namespace dgpt
