#include "net/coordinator.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>

#include "base/log.h"
#include "engine/fingerprint.h"

namespace dgpt::net {

using Clock = std::chrono::steady_clock;

namespace {
constexpr Duration kPingTimeout = std::chrono::seconds(2);
constexpr const char* kComponent = "coordinator";
}  // namespace

std::vector<LayerRange> ProportionalSplit(int first_layer, int n,
                                          const std::vector<double>& weights) {
  const size_t stages = weights.size();
  std::vector<int> counts(stages, 1);  // every stage holds at least one layer
  int remaining = n - static_cast<int>(stages);
  const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
  std::vector<std::pair<double, size_t>> remainders;
  int assigned = 0;
  for (size_t i = 0; i < stages; ++i) {
    const double share = total > 0 ? remaining * weights[i] / total : remaining / double(stages);
    const int whole = static_cast<int>(share);
    counts[i] += whole;
    assigned += whole;
    remainders.emplace_back(share - whole, i);
  }
  // Largest remainders first; ties go to the earlier stage.
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (int i = 0; i < remaining - assigned; ++i) counts[remainders[i].second]++;
  std::vector<LayerRange> ranges;
  int begin = first_layer;
  for (int count : counts) {
    ranges.push_back({begin, begin + count});
    begin += count;
  }
  return ranges;
}

Result<std::vector<LayerRange>> ParseLayerRanges(const std::string& spec, int first, int end,
                                                 size_t expected_count) {
  std::vector<LayerRange> ranges;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = std::min(spec.find(',', start), spec.size());
    const std::string item = spec.substr(start, comma - start);
    int a = 0, b = 0;
    char extra = 0;
    if (std::sscanf(item.c_str(), "%d:%d%c", &a, &b, &extra) != 2) {
      return Status::Error("--layers: \"" + item + "\" is not a range like 0:4");
    }
    ranges.push_back({a, b});
    start = comma + 1;
  }
  if (ranges.size() != expected_count) {
    return Status::Error(
        fmt::format("--layers gives {} ranges for {} workers", ranges.size(), expected_count));
  }
  int expected_begin = first;
  for (const LayerRange& range : ranges) {
    if (range.begin != expected_begin || range.end <= range.begin) {
      return Status::Error(fmt::format(
          "--layers {}: ranges must be non-empty and contiguous from layer {} (got {}:{} where "
          "{}:... was expected)",
          spec, first, range.begin, range.end, expected_begin));
    }
    expected_begin = range.end;
  }
  if (expected_begin != end) {
    return Status::Error(
        fmt::format("--layers {} ends at layer {} but the workers must cover up to {}", spec,
                    expected_begin, end));
  }
  return ranges;
}

// One sequence's place in the pipeline: its id, position, and the frames routed to it.
struct SequenceState {
  uint64_t id = 0;
  uint64_t epoch = 0;  // the connection generation it started in
  int position = 0;
  int capacity = 0;
  bool active = false;
  std::unique_ptr<LocalBlockRunner> local;  // --local-layers, own KV cache
};

class Pipeline::Impl {
 public:
  Impl(const Checkpoint& model, ThreadPool& pool, PipelineOptions options)
      : model_(model), pool_(pool), options_(std::move(options)) {}
  ~Impl();

  Status Init();
  std::unique_ptr<SequenceState> NewSequenceState();
  Status Begin(SequenceState& sequence, int capacity);
  Status Forward(SequenceState& sequence, float* x, int T, bool all_rows);
  void End(SequenceState& sequence);
  std::string PlanDescription() const;
  std::vector<StageInfo> stages() const {
    std::lock_guard lock(link_mutex_);
    return infos_;
  }
  std::vector<StageInfo> CheckHealth();
  Result<std::vector<StatsReply>> CollectStats();

 private:
  struct Stage {
    std::unique_ptr<Connection> control;
    Hello hello;
  };
  // Frames from the last stage for one sequence, or the reason it can no longer get any.
  struct Inbox {
    std::deque<Message> messages;
    std::optional<std::string> failure;
  };

  // All REQUIRE link_mutex_ held.
  std::string StageName(size_t i) const;
  Status ConnectAll();
  Status PlanLayers();
  Result<Fingerprint> ExpectedFingerprint(LayerRange layers) const;
  Status StartReturnListener(const std::string& host);
  Status AssignStage(size_t i);
  void Disconnect(const std::string& reason);
  Result<Message> Request(size_t i, const Message& request, Duration timeout);

  void AcceptReturnConnections();
  void ReadResults(std::shared_ptr<Connection> connection);
  Status Fail(uint64_t epoch, const Status& cause);
  Status SendChunk(SequenceState& sequence, float* x, int first_row, int rows, int pos0,
                   uint32_t flags);
  Status AwaitResults(SequenceState& sequence, float* x, int T, int pos0, int expected,
                      std::vector<StageTiming>* timings);

  const Checkpoint& model_;
  ThreadPool& pool_;
  PipelineOptions options_;
  LayerRange workers_layers_;
  bool local_is_prefix_ = false;
  std::atomic<uint64_t> next_sequence_{0};

  // The links: control connections, the data connection into stage 1, and the plan. Held
  // while (re)connecting and for each control round trip or data send.
  mutable std::mutex link_mutex_;
  std::vector<Stage> stages_;
  std::vector<StageInfo> infos_;
  std::vector<LayerRange> plan_;           // fixed at the first connection
  std::vector<Fingerprint> fingerprints_;  // of each stage's layers
  std::unique_ptr<Connection> data_;
  bool connected_ = false;
  uint64_t epoch_ = 0;  // bumped at every disconnect; sequences of older epochs are dead
  std::unique_ptr<Listener> return_listener_;
  std::string return_address_;
  std::thread return_thread_;

  // Routing of frames from the last stage to the waiting sequences (shared with readers).
  std::mutex inbox_mutex_;
  std::condition_variable inbox_changed_;
  std::map<uint64_t, Inbox> inboxes_;
  std::vector<std::shared_ptr<Connection>> return_connections_;
  std::vector<std::thread> reader_threads_;
  bool shutting_down_ = false;
};

Pipeline::Impl::~Impl() {
  {
    std::lock_guard lock(link_mutex_);
    Disconnect("the pipeline is shutting down");
  }
  {
    std::lock_guard lock(inbox_mutex_);
    shutting_down_ = true;
  }
  if (return_listener_) return_listener_->Close();
  if (return_thread_.joinable()) return_thread_.join();
  std::vector<std::thread> readers;
  {
    std::lock_guard lock(inbox_mutex_);
    for (auto& connection : return_connections_) connection->Close();
    readers = std::move(reader_threads_);
  }
  for (auto& reader : readers) reader.join();
}

std::string Pipeline::Impl::StageName(size_t i) const {
  return fmt::format(
      "stage {}/{} ({}{})", i + 1, infos_.size(), infos_[i].address,
      plan_.empty() ? "" : fmt::format(", layers {}:{}", plan_[i].begin, plan_[i].end));
}

Status Pipeline::Impl::Init() {
  const ModelConfig& cfg = model_.config();
  if (options_.workers.empty()) return Status::Error("no workers given");
  if (options_.prefill_chunk < 1) return Status::Error("--prefill-chunk must be >= 1");
  for (const std::string& address : options_.workers) {
    std::string host;
    uint16_t port;
    DGPT_RETURN_IF_ERROR(ParseHostPort(address, &host, &port));
    infos_.push_back(
        StageInfo{.address = address, .name = "", .layers = {}, .up = false, .last_latency_ms = 0});
  }
  workers_layers_ = {0, cfg.n_layer};
  if (options_.local_layers) {
    const LayerRange local = *options_.local_layers;
    if (local.begin == 0 && local.end > 0 && local.end < cfg.n_layer) {
      local_is_prefix_ = true;
      workers_layers_ = {local.end, cfg.n_layer};
    } else if (local.end == cfg.n_layer && local.begin > 0 && local.begin < cfg.n_layer) {
      workers_layers_ = {0, local.begin};
    } else {
      return Status::Error(fmt::format(
          "--local-layers {}:{} must be a prefix 0:k or a suffix k:{} of the {} layers, leaving "
          "some to the workers",
          local.begin, local.end, cfg.n_layer, cfg.n_layer));
    }
  }
  if (static_cast<int>(options_.workers.size()) > workers_layers_.size()) {
    return Status::Error(fmt::format("{} workers for {} layers: each worker needs at least one",
                                     options_.workers.size(), workers_layers_.size()));
  }
  // Sequence ids differ between coordinator runs, so stale frames never match a new sequence.
  next_sequence_ = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) << 8;
  std::lock_guard lock(link_mutex_);
  return ConnectAll();
}

Status Pipeline::Impl::ConnectAll() {
  Disconnect("reconnecting");
  stages_.clear();
  stages_.resize(infos_.size());
  const HandshakeOptions handshake{.role = Role::kControl,
                                   .node_name = options_.name,
                                   .key = options_.auth_key ? &*options_.auth_key : nullptr,
                                   .connected_side = true};
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto connection = Connection::Connect(infos_[i].address, options_.timeout);
    if (!connection.ok()) {
      return Status::Error(StageName(i) + ": " + connection.status().message());
    }
    auto hello = Handshake(*connection.value(), handshake, options_.timeout);
    if (!hello.ok()) return Status::Error(StageName(i) + ": " + hello.status().message());
    stages_[i].control = std::move(connection).value();
    stages_[i].hello = *hello;
    infos_[i].name = hello->node_name;
    infos_[i].up = true;
  }
  if (plan_.empty()) {
    DGPT_RETURN_IF_ERROR(PlanLayers());
  }
  if (!return_listener_) {
    DGPT_RETURN_IF_ERROR(StartReturnListener(stages_.back().control->local_host()));
  }
  for (size_t i = 0; i < stages_.size(); ++i) DGPT_RETURN_IF_ERROR(AssignStage(i));

  auto data = Connection::Connect(infos_[0].address, options_.timeout);
  if (!data.ok()) return Status::Error(StageName(0) + ": " + data.status().message());
  HandshakeOptions data_handshake = handshake;
  data_handshake.role = Role::kData;
  if (auto hello = Handshake(*data.value(), data_handshake, options_.timeout); !hello.ok()) {
    return Status::Error(StageName(0) + ": " + hello.status().message());
  }
  data_ = std::move(data).value();
  connected_ = true;
  return Status::Ok();
}

Status Pipeline::Impl::PlanLayers() {
  const size_t n = stages_.size();
  const std::string& spec = options_.layers;
  if (spec.empty() || spec == "even") {
    plan_ = ProportionalSplit(workers_layers_.begin, workers_layers_.size(),
                              std::vector<double>(n, 1.0));
  } else if (spec == "auto") {
    std::vector<double> weights;
    for (const Stage& stage : stages_) weights.push_back(std::max<uint32_t>(1, stage.hello.cores));
    plan_ = ProportionalSplit(workers_layers_.begin, workers_layers_.size(), weights);
    const uint64_t layer_bytes = static_cast<uint64_t>(12 * model_.config().n_embd + 13) *
                                 model_.config().n_embd * sizeof(float);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t need = layer_bytes * plan_[i].size();
      const uint64_t have = stages_[i].hello.free_memory_bytes;
      if (have != 0 && need > have) {
        const int layers = plan_[i].size();
        plan_.clear();
        return Status::Error(fmt::format(
            "{} reports {} MiB free but its {} layers need {} MiB; add workers or use --layers",
            StageName(i), have >> 20, layers, need >> 20));
      }
    }
  } else {
    auto ranges = ParseLayerRanges(spec, workers_layers_.begin, workers_layers_.end, n);
    if (!ranges.ok()) return ranges.status();
    plan_ = *ranges;
  }
  for (size_t i = 0; i < n; ++i) {
    infos_[i].layers = plan_[i];
    auto fingerprint = ExpectedFingerprint(plan_[i]);
    if (!fingerprint.ok()) return fingerprint.status();
    fingerprints_.push_back(*fingerprint);
  }
  return Status::Ok();
}

Result<Fingerprint> Pipeline::Impl::ExpectedFingerprint(LayerRange layers) const {
  const LayerRange held = model_.held_layers();
  if (held.begin <= layers.begin && layers.end <= held.end) return StageFingerprint(model_, layers);
  // A coordinator shard from `dgpt split` holds no layers; the manifest beside it lists the
  // fingerprint of every stage it was split into.
  const std::string manifest_path = model_.dir() + "/../manifest.json";
  std::ifstream in(manifest_path);
  const nlohmann::json manifest = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_object() && manifest.contains("stages") && manifest["stages"].is_array()) {
    for (const nlohmann::json& stage : manifest["stages"]) {
      const nlohmann::json range = stage.value("layers", nlohmann::json());
      if (range.is_array() && range.size() == 2 && range[0] == layers.begin &&
          range[1] == layers.end && stage.contains("fingerprint") &&
          stage["fingerprint"].is_string()) {
        return ParseFingerprintHex(stage["fingerprint"].get<std::string>());
      }
    }
  }
  return Status::Error(fmt::format(
      "{} does not hold layers {}:{}, so their fingerprint is unknown: run the coordinator on the "
      "full checkpoint, or on the coordinator/ folder of a `dgpt split` whose stages match "
      "--layers",
      model_.dir(), layers.begin, layers.end));
}

Status Pipeline::Impl::StartReturnListener(const std::string& host) {
  std::string address = options_.return_listen;
  if (address.empty()) {
    address = host.find(':') != std::string::npos ? "[" + host + "]:0" : host + ":0";
  }
  auto listener = Listener::Listen(address);
  if (!listener.ok()) return listener.status();
  return_listener_ = std::move(listener).value();
  const std::string& bound = return_listener_->host();
  return_address_ = bound.find(':') != std::string::npos
                        ? fmt::format("[{}]:{}", bound, return_listener_->port())
                        : fmt::format("{}:{}", bound, return_listener_->port());
  return_thread_ = std::thread([this] { AcceptReturnConnections(); });
  return Status::Ok();
}

void Pipeline::Impl::AcceptReturnConnections() {
  while (true) {
    auto accepted = return_listener_->Accept();
    if (!accepted.ok()) {
      std::lock_guard lock(inbox_mutex_);
      if (shutting_down_) return;
      continue;
    }
    std::shared_ptr<Connection> connection = std::move(accepted).value();
    std::lock_guard lock(inbox_mutex_);
    if (shutting_down_) return;
    return_connections_.push_back(connection);
    reader_threads_.emplace_back([this, connection] { ReadResults(connection); });
  }
}

void Pipeline::Impl::ReadResults(std::shared_ptr<Connection> connection) {
  const HandshakeOptions handshake{.role = Role::kData,
                                   .node_name = options_.name,
                                   .key = options_.auth_key ? &*options_.auth_key : nullptr,
                                   .connected_side = false};
  if (auto hello = Handshake(*connection, handshake, options_.timeout); !hello.ok()) {
    Log(kComponent, "refused return connection from {}: {}", connection->peer(),
        hello.status().message());
    return;
  }
  while (true) {
    auto message = connection->Receive(kNoTimeout);
    if (!message.ok()) return;
    const MessageType type = message->type();
    if (type != MessageType::kResult && type != MessageType::kError) {
      Log(kComponent, "return connection {}: unexpected {}", connection->peer(),
          MessageTypeName(type));
      continue;
    }
    std::lock_guard lock(inbox_mutex_);
    auto inbox = inboxes_.find(message->request_id);
    if (inbox == inboxes_.end()) continue;  // a sequence that already ended or failed
    inbox->second.messages.push_back(std::move(message).value());
    inbox_changed_.notify_all();
  }
}

Result<Message> Pipeline::Impl::Request(size_t i, const Message& request, Duration timeout) {
  Connection& control = *stages_[i].control;
  const auto start = Clock::now();
  DGPT_RETURN_IF_ERROR(control.Send(request, timeout));
  auto reply = control.Receive(timeout);
  if (reply.ok()) {
    infos_[i].last_latency_ms =
        std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  return reply;
}

Status Pipeline::Impl::AssignStage(size_t i) {
  const bool last = i + 1 == stages_.size();
  net::Assign assign{.fingerprint = fingerprints_[i],
                     .n_layer = static_cast<uint32_t>(model_.config().n_layer),
                     .layer_begin = static_cast<uint32_t>(plan_[i].begin),
                     .layer_end = static_cast<uint32_t>(plan_[i].end),
                     .next_hop = last ? return_address_ : infos_[i + 1].address,
                     .wire_dtype = options_.wire_dtype,
                     .max_sequences = options_.max_sequences};
  auto reply =
      Request(i, Message{.flags = last ? kFlagLastStage : 0u, .payload = assign}, options_.timeout);
  if (!reply.ok()) return Status::Error(StageName(i) + ": ASSIGN: " + reply.status().message());
  if (auto* error = std::get_if<ErrorMsg>(&reply->payload)) {
    return Status::Error(fmt::format("{} refused its layers: {}: {}", StageName(i),
                                     ErrorCodeName(error->code), error->message));
  }
  if (!std::holds_alternative<Assigned>(reply->payload)) {
    return Status::Error(StageName(i) + ": unexpected reply to ASSIGN");
  }
  return Status::Ok();
}

void Pipeline::Impl::Disconnect(const std::string& reason) {
  connected_ = false;
  ++epoch_;
  if (data_) data_->Close();
  data_.reset();
  for (Stage& stage : stages_) {
    if (stage.control) stage.control->Close();
    stage.control.reset();
  }
  // Every sequence in flight is lost with the links: wake them with the reason.
  std::lock_guard lock(inbox_mutex_);
  for (auto& connection : return_connections_) connection->Close();
  for (auto& [id, inbox] : inboxes_) inbox.failure = reason;
  inbox_changed_.notify_all();
}

Status Pipeline::Impl::Fail(uint64_t epoch, const Status& cause) {
  std::lock_guard lock(link_mutex_);
  if (epoch != epoch_) return cause;  // another sequence already diagnosed this failure
  // Find the stage that is down, so the message says where to look.
  std::string culprit;
  for (size_t i = 0; i < stages_.size() && culprit.empty(); ++i) {
    if (!stages_[i].control || stages_[i].control->closed()) {
      culprit = StageName(i) + " closed its control connection";
      infos_[i].up = false;
      continue;
    }
    auto pong = Request(i, Message{.payload = Ping{0}}, kPingTimeout);
    if (!pong.ok()) {
      culprit = StageName(i) + " is not responding (" + pong.status().message() + ")";
      infos_[i].up = false;
    }
  }
  const std::string message = culprit.empty() ? cause.message() : culprit + "; " + cause.message();
  Disconnect(message);
  Log(kComponent, "request failed: {}", message);
  return Status::Error(message);
}

std::unique_ptr<SequenceState> Pipeline::Impl::NewSequenceState() {
  auto sequence = std::make_unique<SequenceState>();
  if (options_.local_layers) {
    sequence->local = std::make_unique<LocalBlockRunner>(model_, pool_, options_.prefill_chunk,
                                                         options_.local_layers);
  }
  return sequence;
}

Status Pipeline::Impl::Begin(SequenceState& sequence, int capacity) {
  {
    std::lock_guard lock(link_mutex_);
    if (!connected_) {
      Log(kComponent, "connecting to {} workers", infos_.size());
      DGPT_RETURN_IF_ERROR(ConnectAll());
    }
    sequence.epoch = epoch_;
  }
  sequence.id = ++next_sequence_;
  sequence.position = 0;
  sequence.capacity = capacity;
  sequence.active = true;
  if (sequence.local) DGPT_RETURN_IF_ERROR(sequence.local->Begin(capacity));
  std::lock_guard lock(inbox_mutex_);
  inboxes_[sequence.id] = Inbox{};
  return Status::Ok();
}

Status Pipeline::Impl::SendChunk(SequenceState& sequence, float* x, int first_row, int rows,
                                 int pos0, uint32_t flags) {
  const int C = model_.config().n_embd;
  Tensor activations{.dtype = options_.wire_dtype,
                     .rows = static_cast<uint32_t>(rows),
                     .cols = static_cast<uint32_t>(C),
                     .values = std::vector<float>(x + static_cast<size_t>(first_row) * C,
                                                  x + static_cast<size_t>(first_row + rows) * C)};
  Message forward{.flags = flags,
                  .request_id = sequence.id,
                  .payload = net::Forward{static_cast<uint32_t>(pos0 + first_row),
                                          static_cast<uint32_t>(sequence.capacity),
                                          std::move(activations),
                                          {}}};
  std::lock_guard lock(link_mutex_);
  if (sequence.epoch != epoch_ || !data_) {
    return Status::Error("the pipeline was reconnected while this request ran; retry it");
  }
  Status status = data_->Send(forward, options_.timeout);
  return status.ok() ? status : Status::Error(StageName(0) + ": " + status.message());
}

Status Pipeline::Impl::AwaitResults(SequenceState& sequence, float* x, int T, int pos0,
                                    int expected, std::vector<StageTiming>* timings) {
  const int C = model_.config().n_embd;
  for (int received = 0; received < expected;) {
    Message message;
    {
      std::unique_lock lock(inbox_mutex_);
      Inbox& inbox = inboxes_[sequence.id];
      const bool ready = inbox_changed_.wait_for(lock, options_.timeout, [&] {
        return !inbox.messages.empty() || inbox.failure.has_value();
      });
      if (!inbox.messages.empty()) {
        message = std::move(inbox.messages.front());
        inbox.messages.pop_front();
      } else if (inbox.failure) {
        return Status::Error(*inbox.failure);
      } else if (!ready) {
        return Status::Error(
            fmt::format("no result from the last stage within {} ms", options_.timeout.count()));
      }
    }
    if (auto* error = std::get_if<ErrorMsg>(&message.payload)) {
      return Status::Error(fmt::format("{}: {}", ErrorCodeName(error->code), error->message));
    }
    const ResultMsg& result = std::get<ResultMsg>(message.payload);
    const int64_t offset = static_cast<int64_t>(result.first_position) - pos0;
    if (offset < 0 || offset + static_cast<int64_t>(result.activations.rows) > T ||
        static_cast<int>(result.activations.cols) != C) {
      return Status::Error("the last stage sent a RESULT that does not fit the request");
    }
    std::copy(result.activations.values.begin(), result.activations.values.end(), x + offset * C);
    *timings = result.timings;
    ++received;
  }
  return Status::Ok();
}

Status Pipeline::Impl::Forward(SequenceState& sequence, float* x, int T, bool all_rows) {
  if (!sequence.active) return Status::Error("internal: Forward outside a sequence");
  const int pos0 = sequence.position;
  const bool local_suffix = sequence.local && !local_is_prefix_;
  const bool want_all_rows = all_rows || local_suffix;  // suffix layers need every row's K/V
  const int chunk = options_.prefill_chunk;
  const int chunks = (T + chunk - 1) / chunk;
  const auto start = Clock::now();
  Clock::duration local_time{};
  for (int c = 0; c < chunks; ++c) {
    const int first = c * chunk, rows = std::min(chunk, T - first);
    if (sequence.local && local_is_prefix_) {
      const auto local_start = Clock::now();
      DGPT_RETURN_IF_ERROR(sequence.local->Forward(
          x + static_cast<size_t>(first) * model_.config().n_embd, rows, true));
      local_time += Clock::now() - local_start;
    }
    const uint32_t flags =
        (c + 1 == chunks ? kFlagLastChunk : 0u) | (want_all_rows ? kFlagAllRows : 0u);
    if (Status s = SendChunk(sequence, x, first, rows, pos0, flags); !s.ok()) {
      return Fail(sequence.epoch, s);
    }
  }
  StepTimings step{.rows = T, .total_seconds = 0, .stages = {}, .local_seconds = 0};
  if (Status s = AwaitResults(sequence, x, T, pos0, want_all_rows ? chunks : 1, &step.stages);
      !s.ok()) {
    // An ERROR about this sequence alone (e.g. cache_full) leaves the links up.
    const bool links_ok =
        s.message().find("no result from") == std::string::npos &&
        s.message().find(ErrorCodeName(ErrorCode::kShuttingDown)) == std::string::npos;
    bool sequence_error = false;
    for (ErrorCode code :
         {ErrorCode::kCacheFull, ErrorCode::kUnknownSequence, ErrorCode::kBadRequest}) {
      sequence_error |= s.message().starts_with(ErrorCodeName(code));
    }
    return links_ok && sequence_error ? s : Fail(sequence.epoch, s);
  }
  step.total_seconds = std::chrono::duration<double>(Clock::now() - start - local_time).count();
  if (local_suffix) {
    const auto local_start = Clock::now();
    DGPT_RETURN_IF_ERROR(sequence.local->Forward(x, T, all_rows));
    local_time += Clock::now() - local_start;
  }
  step.local_seconds = std::chrono::duration<double>(local_time).count();
  if (options_.observe_step) options_.observe_step(step);
  sequence.position += T;
  return Status::Ok();
}

void Pipeline::Impl::End(SequenceState& sequence) {
  if (sequence.local) sequence.local->End();
  {
    std::lock_guard lock(inbox_mutex_);
    inboxes_.erase(sequence.id);
  }
  if (!sequence.active) return;
  sequence.active = false;
  std::lock_guard lock(link_mutex_);
  if (!connected_ || sequence.epoch != epoch_) return;  // the workers dropped it already
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto reply =
        Request(i, Message{.request_id = sequence.id, .payload = Release{}}, options_.timeout);
    if (!reply.ok()) {
      Log(kComponent, "{}: RELEASE failed: {}", StageName(i), reply.status().message());
      Disconnect(StageName(i) + ": " + reply.status().message());
      return;
    }
  }
}

std::vector<StageInfo> Pipeline::Impl::CheckHealth() {
  std::lock_guard lock(link_mutex_);
  if (!connected_) {
    if (Status s = ConnectAll(); !s.ok()) {
      for (size_t i = 0; i < infos_.size(); ++i) {
        infos_[i].up = stages_.size() > i && stages_[i].control && !stages_[i].control->closed();
      }
      Disconnect(s.message());
      return infos_;
    }
  }
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto pong = Request(i, Message{.payload = Ping{0}}, kPingTimeout);
    infos_[i].up = pong.ok();
  }
  return infos_;
}

std::string Pipeline::Impl::PlanDescription() const {
  std::string text;
  if (options_.local_layers && local_is_prefix_) {
    text += fmt::format("local layers {}:{} | ", options_.local_layers->begin,
                        options_.local_layers->end);
  }
  for (size_t i = 0; i < infos_.size(); ++i) {
    if (i) text += " | ";
    text += fmt::format("stage {}: {} layers {}:{}", i + 1, infos_[i].address,
                        plan_.empty() ? 0 : plan_[i].begin, plan_.empty() ? 0 : plan_[i].end);
  }
  if (options_.local_layers && !local_is_prefix_) {
    text += fmt::format(" | local layers {}:{}", options_.local_layers->begin,
                        options_.local_layers->end);
  }
  return text;
}

Result<std::vector<StatsReply>> Pipeline::Impl::CollectStats() {
  std::lock_guard lock(link_mutex_);
  if (!connected_) DGPT_RETURN_IF_ERROR(ConnectAll());
  std::vector<StatsReply> all;
  for (size_t i = 0; i < stages_.size(); ++i) {
    auto reply = Request(i, Message{.payload = Stats{}}, options_.timeout);
    if (!reply.ok()) {
      const std::string message = StageName(i) + ": " + reply.status().message();
      Disconnect(message);
      return Status::Error(message);
    }
    auto* stats = std::get_if<StatsReply>(&reply->payload);
    if (!stats) return Status::Error(StageName(i) + ": unexpected reply to STATS");
    all.push_back(*stats);
  }
  return all;
}

namespace {

// A BlockRunner over one SequenceState of a pipeline.
class PipelineSequence : public BlockRunner {
 public:
  PipelineSequence(Pipeline::Impl& pipeline, std::unique_ptr<SequenceState> state)
      : pipeline_(pipeline), state_(std::move(state)) {}
  ~PipelineSequence() override { End(); }
  Status Begin(int capacity) override { return pipeline_.Begin(*state_, capacity); }
  Status Forward(float* x, int T, bool all_rows) override {
    return pipeline_.Forward(*state_, x, T, all_rows);
  }
  void End() override { pipeline_.End(*state_); }

 private:
  Pipeline::Impl& pipeline_;
  std::unique_ptr<SequenceState> state_;
};

}  // namespace

Pipeline::Pipeline(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Pipeline::~Pipeline() {
  default_sequence_.reset();
  impl_.reset();
}

Result<std::unique_ptr<Pipeline>> Pipeline::Connect(const Checkpoint& model, ThreadPool& pool,
                                                    const PipelineOptions& options) {
  auto impl = std::make_unique<Impl>(model, pool, options);
  DGPT_RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<Pipeline>(new Pipeline(std::move(impl)));
}

std::unique_ptr<BlockRunner> Pipeline::NewSequence() {
  return std::make_unique<PipelineSequence>(*impl_, impl_->NewSequenceState());
}

Status Pipeline::Begin(int capacity) {
  if (!default_sequence_) default_sequence_ = NewSequence();
  return default_sequence_->Begin(capacity);
}
Status Pipeline::Forward(float* x, int T, bool all_rows) {
  return default_sequence_ ? default_sequence_->Forward(x, T, all_rows)
                           : Status::Error("internal: Forward before Begin");
}
void Pipeline::End() {
  if (default_sequence_) default_sequence_->End();
}
std::string Pipeline::PlanDescription() const {
  return impl_->PlanDescription();
}
std::vector<StageInfo> Pipeline::stages() const {
  return impl_->stages();
}
std::vector<StageInfo> Pipeline::CheckHealth() {
  return impl_->CheckHealth();
}
Result<std::vector<StatsReply>> Pipeline::CollectStats() {
  return impl_->CollectStats();
}

}  // namespace dgpt::net
