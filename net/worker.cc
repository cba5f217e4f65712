#include "net/worker.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "base/log.h"
#include "engine/checkpoint.h"
#include "engine/fingerprint.h"
#include "engine/kv_cache.h"
#include "engine/ops.h"
#include "engine/resident_memory.h"
#include "engine/thread_pool.h"
#include "engine/transformer.h"

namespace dgpt::net {

using Clock = std::chrono::steady_clock;

namespace {

constexpr Duration kHandshakeTimeout = std::chrono::seconds(10);
constexpr int kWorkspaceTokens = 128;  // grows to the largest chunk received
constexpr size_t kMaxBatch = 64;       // decode steps computed together

// What the coordinator assigned: the loaded blocks and where their output goes.
struct Assignment {
  std::shared_ptr<const Checkpoint> model;
  LayerRange layers;
  WireDType wire_dtype = WireDType::kF32;
  uint32_t max_sequences = 0;
  bool last_stage = false;
  std::shared_ptr<Connection> next_hop;
  uint64_t owner = 0;  // the control connection that assigned it
};

struct Sequence {
  std::unique_ptr<KvCache> cache;
  Clock::time_point last_used;
};

// A frame from a data connection, waiting for the compute thread.
struct Job {
  Message message;
  Clock::time_point received;
};

}  // namespace

class Worker::Impl {
 public:
  explicit Impl(const WorkerOptions& options)
      : options_(options), pool_(options.threads > 0 ? options.threads : DefaultThreadCount()) {}

  Status Init();
  void Stop();
  void Wait();
  uint16_t port() const { return listener_->port(); }

 private:
  std::string component() const;
  void AcceptLoop();
  void ServeConnection(std::shared_ptr<Connection> connection, uint64_t id);
  void ServeControl(Connection& connection, uint64_t id);
  void ServeData(Connection& connection);
  Message HandleAssign(const Message& request, uint64_t control_id);
  Message HandleRelease(const Message& request);
  Message HandleStats();
  void ComputeLoop();
  void Process(std::vector<Job>& batch);
  // Checks a FORWARD against the sequence table and finds or starts its sequence; returns the
  // ERROR to send downstream when it cannot run.
  std::optional<Message> Prepare(const Assignment& assignment, const Message& message,
                                 std::shared_ptr<Sequence>* sequence);
  // The frame that carries a computed chunk on: FORWARD to the next stage, or RESULT.
  Message Finish(const Assignment& assignment, const Message& request, std::vector<float> x);
  void SendDownstream(const Assignment& assignment, const Message& message);
  void DropSequences(const char* why);
  void SweepIdleSequences();

  WorkerOptions options_;
  ThreadPool pool_;
  std::unique_ptr<Listener> listener_;
  ModelConfig config_;
  std::optional<LayerRange> shard_layers_;  // set when the folder is a shard

  std::mutex mutex_;  // guards everything below
  std::shared_ptr<Assignment> assignment_;
  std::shared_ptr<const Checkpoint> loaded_;  // kept across re-ASSIGNs of the same range
  std::map<uint64_t, std::shared_ptr<Sequence>> sequences_;
  std::deque<Job> jobs_;
  std::condition_variable jobs_changed_;
  std::map<uint64_t, std::shared_ptr<Connection>> connections_;
  // Threads serving connections; `finished_connections_` lists the ids whose thread has returned,
  // so the accept loop can join them (an unjoined thread keeps its stack).
  std::map<uint64_t, std::thread> connection_threads_;
  std::vector<uint64_t> finished_connections_;
  uint64_t next_connection_id_ = 1;
  bool stopping_ = false;
  bool stopped_ = false;
  bool compute_done_ = false;
  std::condition_variable stopped_changed_;
  uint64_t forwards_ = 0, tokens_ = 0, compute_ns_ = 0, batches_ = 0;

  std::thread accept_thread_;
  std::thread compute_thread_;
  std::unique_ptr<Workspace> workspace_;         // compute thread only
  std::vector<std::shared_ptr<Sequence>> held_;  // compute thread only
};

Worker::Worker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Worker::~Worker() {
  Stop();
  Wait();
}
uint16_t Worker::port() const {
  return impl_->port();
}
void Worker::Stop() {
  impl_->Stop();
}
void Worker::Wait() {
  impl_->Wait();
}

Result<std::unique_ptr<Worker>> Worker::Start(const WorkerOptions& options) {
  auto impl = std::make_unique<Impl>(options);
  DGPT_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Worker>(new Worker(std::move(impl)));
}

std::string Worker::Impl::component() const {
  std::lock_guard lock(const_cast<std::mutex&>(mutex_));
  if (!assignment_) return "worker[unassigned]";
  return fmt::format("worker[{}:{}]", assignment_->layers.begin, assignment_->layers.end);
}

Status Worker::Impl::Init() {
  // Check the whole folder now, so a bad model fails at start-up and not at the first ASSIGN;
  // map nothing until the coordinator says which layers.
  auto probe = Checkpoint::Load(options_.model_dir,
                                LoadOptions{.layers = {0, 0}, .embeddings = false, .head = false});
  if (!probe.ok()) return probe.status();
  config_ = probe.value()->config();
  if (probe.value()->shard()) shard_layers_ = probe.value()->held_layers();

  auto listener = Listener::Listen(options_.listen);
  if (!listener.ok()) return listener.status();
  listener_ = std::move(listener).value();
  if (options_.name.empty()) options_.name = fmt::format("{}:{}", listener_->host(), port());
  SetBlasThreads(pool_.num_threads());
  workspace_ = std::make_unique<Workspace>(config_, kWorkspaceTokens);
  Log(component(), "listening on {}:{} with {} threads, model {} ({} layers{}){}",
      listener_->host(), port(), pool_.num_threads(), options_.model_dir, config_.n_layer,
      shard_layers_ ? fmt::format(", shard holding {}:{}", shard_layers_->begin, shard_layers_->end)
                    : "",
      options_.auth_key ? ", auth key required" : "");
  accept_thread_ = std::thread([this] { AcceptLoop(); });
  compute_thread_ = std::thread([this] { ComputeLoop(); });
  return Status::Ok();
}

void Worker::Impl::AcceptLoop() {
  while (true) {
    auto accepted = listener_->Accept();
    if (!accepted.ok()) {
      std::lock_guard lock(mutex_);
      if (stopping_) return;
      Log(component(), "accept failed: {}", accepted.status().message());
      continue;
    }
    std::shared_ptr<Connection> connection = std::move(accepted).value();
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    for (uint64_t finished : finished_connections_) {
      connection_threads_[finished].join();
      connection_threads_.erase(finished);
    }
    finished_connections_.clear();
    const uint64_t id = next_connection_id_++;
    connections_[id] = connection;
    connection_threads_[id] =
        std::thread([this, connection, id] { ServeConnection(connection, id); });
  }
}

void Worker::Impl::ServeConnection(std::shared_ptr<Connection> connection, uint64_t id) {
  HandshakeOptions handshake{.role = Role::kData,  // our role byte is informational only
                             .node_name = options_.name,
                             .key = options_.auth_key ? &*options_.auth_key : nullptr,
                             .connected_side = false,
                             .max_frame_bytes = options_.max_frame_bytes,
                             .cores = static_cast<uint32_t>(pool_.num_threads()),
                             .free_memory_bytes = AvailableMemoryBytes()};
  auto peer = Handshake(*connection, handshake, kHandshakeTimeout);
  if (!peer.ok()) {
    Log(component(), "refused connection from {}: {}", connection->peer(), peer.status().message());
  } else if (peer->role == Role::kControl) {
    Log(component(), "control connection from {} ({})", connection->peer(), peer->node_name);
    ServeControl(*connection, id);
  } else {
    Log(component(), "data connection from {} ({})", connection->peer(), peer->node_name);
    ServeData(*connection);
  }
  connection->Close();
  std::lock_guard lock(mutex_);
  connections_.erase(id);
  finished_connections_.push_back(id);
}

void Worker::Impl::ServeControl(Connection& connection, uint64_t id) {
  while (true) {
    auto request = connection.Receive(kNoTimeout);
    if (!request.ok()) {
      if (request.status().message().find("closed") == std::string::npos) {
        Log(component(), "control connection {}: {}", connection.peer(),
            request.status().message());
      }
      break;
    }
    Message reply;
    reply.request_id = request->request_id;
    switch (request->type()) {
      case MessageType::kAssign:
        reply = HandleAssign(*request, id);
        break;
      case MessageType::kRelease:
        reply = HandleRelease(*request);
        break;
      case MessageType::kPing:
        reply.payload = Pong{std::get<Ping>(request->payload).timestamp_ns};
        break;
      case MessageType::kStats:
        reply = HandleStats();
        break;
      default:
        reply.payload =
            ErrorMsg{ErrorCode::kBadRequest,
                     fmt::format("{} is not a control request", MessageTypeName(request->type()))};
    }
    reply.request_id = request->request_id;
    if (Status s = connection.Send(reply, options_.io_timeout); !s.ok()) {
      Log(component(), "control reply to {} failed: {}", connection.peer(), s.message());
      break;
    }
  }
  // The coordinator that owns our sequences is gone: free them.
  std::shared_ptr<Assignment> assignment;
  {
    std::lock_guard lock(mutex_);
    assignment = assignment_;
  }
  if (assignment && assignment->owner == id) DropSequences("coordinator disconnected");
}

void Worker::Impl::ServeData(Connection& connection) {
  while (true) {
    auto message = connection.Receive(kNoTimeout);
    if (!message.ok()) {
      if (message.status().message().find("closed") == std::string::npos) {
        Log(component(), "data connection {}: {}", connection.peer(), message.status().message());
      }
      return;
    }
    const MessageType type = message->type();
    if (type != MessageType::kForward && type != MessageType::kResult &&
        type != MessageType::kError) {
      SendErrorQuietly(connection, ErrorCode::kBadRequest,
                       fmt::format("{} is not a data-path message", MessageTypeName(type)));
      Log(component(), "data connection {}: unexpected {}, closing", connection.peer(),
          MessageTypeName(type));
      return;
    }
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    jobs_.push_back(Job{std::move(message).value(), Clock::now()});
    jobs_changed_.notify_one();
  }
}

Message Worker::Impl::HandleAssign(const Message& request, uint64_t control_id) {
  const Assign& assign = std::get<Assign>(request.payload);
  Message reply;
  auto refuse = [&](ErrorCode code, const std::string& why) {
    Log(component(), "ASSIGN refused: {}", why);
    reply.payload = ErrorMsg{code, why};
    return reply;
  };
  const LayerRange layers{static_cast<int>(assign.layer_begin), static_cast<int>(assign.layer_end)};
  if (assign.n_layer != static_cast<uint32_t>(config_.n_layer) || layers.begin >= layers.end ||
      layers.end > config_.n_layer) {
    return refuse(
        ErrorCode::kWrongModel,
        fmt::format("asked for layers {}:{} of a {}-layer model, but {} holds a "
                    "{}-layer model",
                    layers.begin, layers.end, assign.n_layer, options_.model_dir, config_.n_layer));
  }
  if (shard_layers_ && (layers.begin < shard_layers_->begin || layers.end > shard_layers_->end)) {
    return refuse(
        ErrorCode::kWrongModel,
        fmt::format("asked for layers {}:{} but the shard {} holds {}:{}", layers.begin, layers.end,
                    options_.model_dir, shard_layers_->begin, shard_layers_->end));
  }
  std::shared_ptr<const Checkpoint> model;
  {
    std::lock_guard lock(mutex_);
    if (loaded_ && loaded_->layers() == layers) model = loaded_;
  }
  if (!model) {
    {
      std::lock_guard lock(mutex_);
      loaded_.reset();  // release the old mapping before mapping another range
    }
    auto loaded =
        Checkpoint::Load(options_.model_dir, LoadOptions{.layers = layers,
                                                         .embeddings = false,
                                                         .head = false,
                                                         .weight_format = options_.weight_format});
    if (!loaded.ok()) return refuse(ErrorCode::kInternal, loaded.status().message());
    model = std::move(loaded).value();
  }
  auto fingerprint = StageFingerprint(*model, layers);
  if (!fingerprint.ok()) return refuse(ErrorCode::kInternal, fingerprint.status().message());
  if (*fingerprint != assign.fingerprint) {
    return refuse(ErrorCode::kWrongModel,
                  fmt::format("{} holds different weights for layers {}:{} (fingerprint {}, the "
                              "coordinator expects {}); give this worker the same model",
                              options_.model_dir, layers.begin, layers.end,
                              FingerprintHex(*fingerprint).substr(0, 16),
                              FingerprintHex(assign.fingerprint).substr(0, 16)));
  }
  auto next_hop = Connection::Connect(assign.next_hop, kHandshakeTimeout);
  if (!next_hop.ok()) {
    return refuse(ErrorCode::kInternal,
                  "cannot reach the next hop: " + next_hop.status().message());
  }
  HandshakeOptions handshake{.role = Role::kData,
                             .node_name = options_.name,
                             .key = options_.auth_key ? &*options_.auth_key : nullptr,
                             .connected_side = true,
                             .max_frame_bytes = options_.max_frame_bytes};
  if (auto peer = Handshake(*next_hop.value(), handshake, kHandshakeTimeout); !peer.ok()) {
    return refuse(ErrorCode::kInternal,
                  "next hop " + assign.next_hop + ": " + peer.status().message());
  }

  auto assignment = std::make_shared<Assignment>();
  assignment->model = model;
  assignment->layers = layers;
  assignment->wire_dtype = assign.wire_dtype;
  assignment->max_sequences = assign.max_sequences > 0
                                  ? assign.max_sequences
                                  : static_cast<uint32_t>(options_.max_sequences);
  assignment->max_sequences = std::min<uint32_t>(assignment->max_sequences, options_.max_sequences);
  assignment->last_stage = (request.flags & kFlagLastStage) != 0;
  assignment->next_hop = std::move(next_hop).value();
  assignment->owner = control_id;
  std::shared_ptr<Assignment> previous;
  {
    std::lock_guard lock(mutex_);
    previous = std::move(assignment_);
    assignment_ = assignment;
    loaded_ = model;
    sequences_.clear();
  }
  if (previous && previous->next_hop) previous->next_hop->Close();
  Log(component(),
      "assigned layers {}:{} of {}, next hop {}{}, wire {}, up to {} sequences, weights {} ({})",
      layers.begin, layers.end, config_.n_layer, assign.next_hop,
      assignment->last_stage ? " (coordinator)" : "",
      assign.wire_dtype == WireDType::kF16 ? "f16" : "f32", assignment->max_sequences,
      WeightFormatName(model->weight_format()), ActiveKernels().name);
  uint64_t weight_bytes = 0;
  for (int layer = layers.begin; layer < layers.end; ++layer) {
    for (std::string_view name : kBlockTensorNames) {
      const std::string full = fmt::format("{}h.{}.{}", model->tensor_prefix(), layer, name);
      if (const TensorInfo* info = model->file().Find(full)) weight_bytes += info->num_bytes();
    }
  }
  reply.payload = Assigned{*fingerprint, weight_bytes};
  return reply;
}

Message Worker::Impl::HandleRelease(const Message& request) {
  Message reply;
  std::lock_guard lock(mutex_);
  if (sequences_.erase(request.request_id) == 0) {
    reply.payload =
        ErrorMsg{ErrorCode::kUnknownSequence, fmt::format("no sequence {}", request.request_id)};
  } else {
    reply.payload = Ok{};
  }
  return reply;
}

Message Worker::Impl::HandleStats() {
  std::lock_guard lock(mutex_);
  StatsReply stats;
  stats.sequences_in_use = static_cast<uint32_t>(sequences_.size());
  stats.max_sequences = assignment_ ? assignment_->max_sequences : options_.max_sequences;
  for (const auto& [id, sequence] : sequences_) stats.kv_cache_bytes += sequence->cache->bytes();
  stats.forwards = forwards_;
  stats.tokens = tokens_;
  stats.compute_ns = compute_ns_;
  if (assignment_) {
    stats.layer_begin = assignment_->layers.begin;
    stats.layer_end = assignment_->layers.end;
  }
  if (loaded_) {
    stats.weight_bytes = static_cast<uint64_t>(loaded_->block_matrix_bytes());
    stats.weight_format = static_cast<uint32_t>(loaded_->weight_format());
  }
  stats.resident_bytes = ResidentMemoryBytes();
  Message reply;
  reply.payload = stats;
  return reply;
}

void Worker::Impl::DropSequences(const char* why) {
  size_t dropped = 0;
  {
    std::lock_guard lock(mutex_);
    dropped = sequences_.size();
    sequences_.clear();
  }
  if (dropped) Log(component(), "freed {} sequences: {}", dropped, why);
}

void Worker::Impl::SweepIdleSequences() {
  const auto now = Clock::now();
  size_t freed = 0;
  {
    std::lock_guard lock(mutex_);
    std::erase_if(sequences_, [&](const auto& entry) {
      const bool idle = now - entry.second->last_used > options_.idle_timeout;
      freed += idle;
      return idle;
    });
  }
  if (freed) Log(component(), "freed {} idle sequences", freed);
}

namespace {

// A decode step (one row continuing a sequence) can share a batch with other sequences' steps.
bool IsDecodeStep(const Message& message) {
  if (message.type() != MessageType::kForward) return false;
  const Forward& forward = std::get<Forward>(message.payload);
  return forward.activations.rows == 1 && forward.first_position > 0;
}

}  // namespace

void Worker::Impl::ComputeLoop() {
  // Sweep on a clock, not only when idle: a busy stage must still free abandoned sequences.
  const auto sweep_interval =
      std::min<Clock::duration>(std::chrono::seconds(1), options_.idle_timeout / 2);
  auto last_sweep = Clock::now();
  while (true) {
    if (Clock::now() - last_sweep >= sweep_interval) {
      SweepIdleSequences();
      last_sweep = Clock::now();
    }
    std::vector<Job> batch;
    {
      std::unique_lock lock(mutex_);
      jobs_changed_.wait_for(lock, sweep_interval, [&] { return stopping_ || !jobs_.empty(); });
      if (stopping_) {
        // Fail what is queued so the coordinator hears about it instead of waiting.
        auto pending = std::move(jobs_);
        auto assignment = assignment_;
        lock.unlock();
        for (const Job& queued : pending) {
          if (assignment && queued.message.type() == MessageType::kForward) {
            SendDownstream(*assignment,
                           Message{.request_id = queued.message.request_id,
                                   .payload = ErrorMsg{ErrorCode::kShuttingDown,
                                                       options_.name + " is shutting down"}});
          }
        }
        compute_done_ = true;
        stopped_changed_.notify_all();
        return;
      }
      if (jobs_.empty()) continue;
      batch.push_back(std::move(jobs_.front()));
      jobs_.pop_front();
      if (IsDecodeStep(batch.front().message)) {
        // Take every other queued decode step of a different sequence, so the weights are read
        // once for all of them. A sequence with an earlier job still queued is skipped, which
        // keeps each sequence's frames in order.
        std::set<uint64_t> taken = {batch.front().message.request_id}, blocked;
        for (auto it = jobs_.begin(); it != jobs_.end() && batch.size() < kMaxBatch;) {
          const uint64_t id = it->message.request_id;
          if (IsDecodeStep(it->message) && !taken.count(id) && !blocked.count(id)) {
            taken.insert(id);
            batch.push_back(std::move(*it));
            it = jobs_.erase(it);
          } else {
            blocked.insert(id);
            ++it;
          }
        }
      }
    }
    Process(batch);
  }
}

void Worker::Impl::Process(std::vector<Job>& batch) {
  std::shared_ptr<Assignment> assignment;
  {
    std::lock_guard lock(mutex_);
    assignment = assignment_;
  }
  if (!assignment) {
    Log(component(), "dropped {} frame(s) for sequence {}: no layers assigned yet", batch.size(),
        batch.front().message.request_id);
    return;
  }
  if (batch.front().message.type() != MessageType::kForward) {  // RESULT / ERROR: pass it on
    SendDownstream(*assignment, batch.front().message);
    return;
  }
  std::vector<Message*> steps;
  std::vector<KvCache*> caches;
  std::vector<Clock::time_point> received;
  for (Job& job : batch) {
    Message& message = job.message;
    std::shared_ptr<Sequence> sequence;
    if (auto error = Prepare(*assignment, message, &sequence)) {
      Log(component(), "sequence {}: {}", message.request_id,
          std::get<ErrorMsg>(error->payload).message);
      SendDownstream(*assignment, *error);
      continue;
    }
    steps.push_back(&message);
    received.push_back(job.received);
    caches.push_back(sequence->cache.get());
    held_.push_back(std::move(sequence));  // alive until computed, even if released meanwhile
  }
  if (steps.empty()) return;

  const int C = config_.n_embd;
  const auto start = Clock::now();
  std::vector<std::vector<float>> outputs;
  int tokens = 0;
  if (steps.size() == 1) {
    // One chunk, computed exactly as the coordinator chunked it: the same chunking as a single
    // process, hence bit-identical results.
    const Forward& forward = std::get<Forward>(steps[0]->payload);
    const int rows = static_cast<int>(forward.activations.rows);
    if (rows > workspace_->max_tokens()) workspace_ = std::make_unique<Workspace>(config_, rows);
    outputs.push_back(forward.activations.values);
    ForwardBlocks(outputs[0].data(), rows, *caches[0], *assignment->model, *workspace_, pool_);
    tokens = rows;
  } else {
    const int B = static_cast<int>(steps.size());
    if (B > workspace_->max_tokens()) workspace_ = std::make_unique<Workspace>(config_, B);
    std::vector<float> x(static_cast<size_t>(B) * C);
    for (int b = 0; b < B; ++b) {
      const auto& values = std::get<Forward>(steps[b]->payload).activations.values;
      std::copy(values.begin(), values.end(), x.begin() + static_cast<size_t>(b) * C);
    }
    ForwardBlocksBatch(x.data(), caches, *assignment->model, *workspace_, pool_);
    for (int b = 0; b < B; ++b) {
      outputs.emplace_back(x.begin() + static_cast<size_t>(b) * C,
                           x.begin() + static_cast<size_t>(b + 1) * C);
    }
    tokens = B;
  }
  held_.clear();
  const auto nanoseconds = [](Clock::duration d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  };
  const uint64_t compute_ns = nanoseconds(Clock::now() - start);
  {
    std::lock_guard lock(mutex_);
    forwards_ += steps.size();
    tokens_ += tokens;
    batches_ += steps.size() > 1;
    compute_ns_ += compute_ns;
  }
  for (size_t k = 0; k < steps.size(); ++k) {
    auto& timings = std::get<Forward>(steps[k]->payload).timings;
    timings.push_back(StageTiming{nanoseconds(start - received[k]), compute_ns});
    SendDownstream(*assignment, Finish(*assignment, *steps[k], std::move(outputs[k])));
  }
}

std::optional<Message> Worker::Impl::Prepare(const Assignment& assignment, const Message& message,
                                             std::shared_ptr<Sequence>* out) {
  const Forward& forward = std::get<Forward>(message.payload);
  const uint64_t sequence_id = message.request_id;
  const int rows = static_cast<int>(forward.activations.rows);
  auto error = [&](ErrorCode code, const std::string& why) {
    return Message{
        .request_id = sequence_id,
        .payload = ErrorMsg{code, fmt::format("stage {}:{} on {}: {}", assignment.layers.begin,
                                              assignment.layers.end, options_.name, why)}};
  };
  if (static_cast<int>(forward.activations.cols) != config_.n_embd || rows <= 0) {
    return error(ErrorCode::kBadRequest,
                 fmt::format("activations are {}x{}, expected rows x {}", rows,
                             forward.activations.cols, config_.n_embd));
  }
  std::lock_guard lock(mutex_);
  std::shared_ptr<Sequence> sequence;
  if (forward.first_position == 0) {
    if (forward.capacity == 0 || forward.capacity > static_cast<uint32_t>(config_.n_positions)) {
      return error(ErrorCode::kBadRequest, fmt::format("capacity {} is outside 1..{}",
                                                       forward.capacity, config_.n_positions));
    }
    sequences_.erase(sequence_id);  // a restart of the same id replaces it
    if (sequences_.size() >= assignment.max_sequences) {
      return error(ErrorCode::kCacheFull,
                   fmt::format("all {} KV cache slots are in use; retry later or raise "
                               "--max-sequences",
                               assignment.max_sequences));
    }
    sequence = std::make_shared<Sequence>();
    sequence->cache =
        std::make_unique<KvCache>(assignment.layers, forward.capacity, config_.n_embd);
    sequences_[sequence_id] = sequence;
  } else {
    auto it = sequences_.find(sequence_id);
    if (it == sequences_.end()) {
      return error(
          ErrorCode::kUnknownSequence,
          fmt::format("no sequence {} (released, timed out or never started)", sequence_id));
    }
    sequence = it->second;
  }
  const KvCache& cache = *sequence->cache;
  if (static_cast<int>(forward.first_position) != cache.length() ||
      cache.length() + rows > cache.capacity()) {
    return error(ErrorCode::kBadRequest,
                 fmt::format("chunk at position {} with {} rows does not continue the cache "
                             "(length {}, capacity {})",
                             forward.first_position, rows, cache.length(), cache.capacity()));
  }
  sequence->last_used = Clock::now();
  *out = std::move(sequence);
  return std::nullopt;
}

Message Worker::Impl::Finish(const Assignment& assignment, const Message& request,
                             std::vector<float> x) {
  const Forward& forward = std::get<Forward>(request.payload);
  const uint32_t C = static_cast<uint32_t>(config_.n_embd);
  Tensor out{.dtype = assignment.wire_dtype,
             .rows = forward.activations.rows,
             .cols = C,
             .values = std::move(x)};
  if (!assignment.last_stage) {
    return Message{.flags = request.flags,
                   .request_id = request.request_id,
                   .payload = Forward{forward.first_position, forward.capacity, std::move(out),
                                      forward.timings}};
  }
  if (!(request.flags & (kFlagLastChunk | kFlagAllRows))) {
    return Message{.payload = Ok{}};  // a middle prefill chunk: nothing to report
  }
  uint32_t first = forward.first_position;
  if (!(request.flags & kFlagAllRows)) {  // only the last row feeds the LM head
    out.values.erase(out.values.begin(), out.values.end() - C);
    first += out.rows - 1;
    out.rows = 1;
  }
  return Message{.request_id = request.request_id,
                 .payload = ResultMsg{first, std::move(out), forward.timings}};
}

void Worker::Impl::SendDownstream(const Assignment& assignment, const Message& message) {
  if (message.type() == MessageType::kOk) return;
  if (Status s = assignment.next_hop->Send(message, options_.io_timeout); !s.ok()) {
    Log(component(), "next hop: {}", s.message());
  }
}

void Worker::Impl::Stop() {
  std::vector<std::shared_ptr<Connection>> connections;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, connection] : connections_) connections.push_back(connection);
  }
  Log(component(), "shutting down");
  listener_->Close();
  jobs_changed_.notify_all();
  {
    // Give the compute thread a moment to fail the queued work, then cut the next hop: a
    // write blocked on a peer that does not read must not hold the shutdown for io_timeout.
    std::unique_lock lock(mutex_);
    stopped_changed_.wait_for(lock, std::chrono::seconds(1), [&] { return compute_done_; });
  }
  std::shared_ptr<Connection> next_hop;
  {
    std::lock_guard lock(mutex_);
    if (assignment_) next_hop = assignment_->next_hop;
  }
  if (next_hop) next_hop->Close();
  if (compute_thread_.joinable()) compute_thread_.join();
  for (auto& connection : connections) connection->Close();
  if (accept_thread_.joinable()) accept_thread_.join();
  std::map<uint64_t, std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    threads = std::move(connection_threads_);
  }
  for (auto& [id, thread] : threads) thread.join();
  std::lock_guard lock(mutex_);
  stopped_ = true;
  stopped_changed_.notify_all();
}

void Worker::Impl::Wait() {
  std::unique_lock lock(mutex_);
  stopped_changed_.wait(lock, [&] { return stopped_; });
}

}  // namespace dgpt::net
