#include "engine/thread_pool.h"

#include <sched.h>

#include <algorithm>

namespace dgpt {

int DefaultThreadCount() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1u, std::thread::hardware_concurrency());
}

ThreadPool::ThreadPool(int num_threads) {
  for (int i = 1; i < std::max(1, num_threads); ++i) {
    workers_.emplace_back([this, i] { WorkerLoop(i); });
  }
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (std::thread& worker : workers_) worker.join();
}

// Takes tasks until none are left; `lock` holds mutex_ except while a task runs.
void ThreadPool::DrainTasks(std::unique_lock<std::mutex>& lock) {
  while (next_task_ < num_tasks_) {
    const int task = next_task_++;
    const auto* job = job_;
    lock.unlock();
    (*job)(task);
    lock.lock();
  }
}

void ThreadPool::WorkerLoop(int /*worker_index*/) {
  uint64_t seen_generation = 0;
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen_generation; });
    if (stopping_) return;
    seen_generation = generation_;
    ++busy_workers_;
    DrainTasks(lock);
    if (--busy_workers_ == 0 && next_task_ >= num_tasks_) done_.notify_all();
  }
}

void ThreadPool::Run(int num_tasks, const std::function<void(int)>& fn) {
  if (num_tasks <= 0) return;
  if (workers_.empty() || num_tasks == 1) {
    for (int task = 0; task < num_tasks; ++task) fn(task);
    return;
  }
  std::lock_guard run_lock(run_mutex_);
  std::unique_lock lock(mutex_);
  job_ = &fn;
  num_tasks_ = num_tasks;
  next_task_ = 0;
  ++generation_;
  wake_.notify_all();
  DrainTasks(lock);  // the caller works too
  done_.wait(lock, [&] { return busy_workers_ == 0; });
  job_ = nullptr;
  num_tasks_ = 0;
}

void ThreadPool::ParallelFor(int64_t n, int64_t align,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t blocks = (n + align - 1) / align;
  const int chunks = static_cast<int>(std::min<int64_t>(num_threads(), blocks));
  Run(chunks, [&](int chunk) {
    const int64_t begin = std::min(n, blocks * chunk / chunks * align);
    const int64_t end = std::min(n, blocks * (chunk + 1) / chunks * align);
    if (begin < end) fn(begin, end);
  });
}

}  // namespace dgpt
