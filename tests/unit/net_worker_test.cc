// Integration tests of the pipeline worker (net/worker.h): a real Worker on 127.0.0.1 over a tiny
// random checkpoint, driven by this test acting as the coordinator with raw Connections (a
// control connection, a data connection in, and a listener the last stage sends RESULTs to).
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <span>
#include <thread>

#include "engine/checkpoint.h"
#include "engine/fingerprint.h"
#include "engine/kv_cache.h"
#include "engine/safetensors.h"
#include "engine/transformer.h"
#include "net/connection.h"
#include "net/worker.h"
#include "tests/unit/gpt2_test_shapes.h"

using namespace dgpt;
using namespace dgpt::net;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

constexpr int kLayers = 2, kHeads = 2, kEmbd = 16, kPositions = 32, kVocab = 11;
constexpr int kThreads = 2;        // the same on the worker and the local reference
constexpr Duration kTimeout = 5s;  // bound on every network wait, so a broken worker cannot hang
constexpr LayerRange kAllLayers{0, kLayers};

std::string Text(const Status& status) {
  return status.ok() ? "ok" : status.message();
}

// Writes a GPT-2 checkpoint with random weights once per process and returns its folder.
const std::string& TinyModelDir() {
  static const std::string dir = [] {
    const std::string path =
        std::string(DGPT_TEST_TMP) + "/worker_model_" + std::to_string(::getpid());
    fs::create_directories(path);
    const nlohmann::json config = {{"n_layer", kLayers},
                                   {"n_head", kHeads},
                                   {"n_embd", kEmbd},
                                   {"n_positions", kPositions},
                                   {"vocab_size", kVocab},
                                   {"layer_norm_epsilon", 1e-5},
                                   {"activation_function", "gelu_new"}};
    std::ofstream(path + "/config.json") << config.dump();

    const auto shapes = testing::Gpt2TensorShapes(kLayers, kEmbd, kVocab, kPositions, "");
    std::mt19937 rng(20240611);
    std::uniform_real_distribution<float> uniform(-0.5f, 0.5f);
    std::vector<std::vector<float>> buffers;
    buffers.reserve(shapes.size());  // TensorToWrite points into these
    std::vector<TensorToWrite> tensors;
    for (const auto& [name, shape] : shapes) {
      int64_t count = 1;
      for (int64_t d : shape) count *= d;
      std::vector<float>& values = buffers.emplace_back(count);
      for (float& value : values) value = uniform(rng);
      tensors.push_back({"transformer." + name, DType::kF32, shape, values.data(),
                         values.size() * sizeof(float)});
    }
    const Status written = WriteSafetensors(path + "/model.safetensors", tensors);
    INFO(Text(written));
    REQUIRE(written.ok());
    return path;
  }();
  return dir;
}

std::unique_ptr<Checkpoint> LoadLayers(LayerRange layers) {
  auto model = Checkpoint::Load(TinyModelDir(),
                                LoadOptions{.layers = layers, .embeddings = false, .head = false});
  INFO(Text(model.status()));
  REQUIRE(model.ok());
  return std::move(model).value();
}

Fingerprint ModelFingerprint(LayerRange layers) {
  auto fingerprint = StageFingerprint(*LoadLayers(layers), layers);
  REQUIRE(fingerprint.ok());
  return *fingerprint;
}

std::vector<float> RandomActivations(int rows, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(rows) * kEmbd);
  for (float& value : values) value = normal(rng);
  return values;
}

std::vector<float> LastRow(const std::vector<float>& rows) {
  return std::vector<float>(rows.end() - kEmbd, rows.end());
}

// Bit-for-bit, not just ==: the pipeline promises the exact floats of a single process.
bool SameBits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

// The same blocks run in this process: the reference every RESULT must equal.
class LocalStage {
 public:
  explicit LocalStage(int capacity)
      : model_(LoadLayers(kAllLayers)),
        cache_(kAllLayers, capacity, kEmbd),
        workspace_(model_->config(), kPositions),
        pool_(kThreads) {}

  std::vector<float> Forward(std::vector<float> x) {
    ForwardBlocks(x.data(), static_cast<int>(x.size() / kEmbd), cache_, *model_, workspace_, pool_);
    return x;
  }

 private:
  std::unique_ptr<Checkpoint> model_;
  KvCache cache_;
  Workspace workspace_;
  ThreadPool pool_;
};

WorkerOptions TestOptions() {
  WorkerOptions options;
  options.listen = "127.0.0.1:0";
  options.model_dir = TinyModelDir();
  options.name = "test-worker";
  options.threads = kThreads;
  options.io_timeout = kTimeout;
  return options;
}

// Runs `fn` on its own thread and returns how long it took. A call still running after `limit`
// would hang the whole suite, so that aborts the process with a message instead.
template <typename Fn>
Duration RunWithin(Duration limit, const char* what, Fn fn) {
  const auto start = std::chrono::steady_clock::now();
  std::packaged_task<void()> task(fn);
  std::future<void> done = task.get_future();
  std::thread thread(std::move(task));
  if (done.wait_for(limit) != std::future_status::ready) {
    std::cerr << what << " did not return within " << limit.count() << " ms; aborting\n";
    std::abort();
  }
  thread.join();
  return std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - start);
}

Result<std::unique_ptr<Connection>> TryConnect(uint16_t port, Role role,
                                               const AuthKey* key = nullptr) {
  auto connection = Connection::Connect("127.0.0.1:" + std::to_string(port), kTimeout);
  if (!connection.ok()) return connection.status();
  auto hello = Handshake(
      *connection.value(),
      HandshakeOptions{.role = role, .node_name = "test-coordinator", .key = key}, kTimeout);
  if (!hello.ok()) return hello.status();
  return std::move(connection).value();
}

const ErrorMsg& ExpectError(const Message& message, ErrorCode code) {
  const auto* error = std::get_if<ErrorMsg>(&message.payload);
  INFO("got " << MessageTypeName(message.type()));
  REQUIRE(error);
  INFO("error " << ErrorCodeName(error->code) << ": " << error->message);
  REQUIRE(error->code == code);
  return *error;
}

// Plays the coordinator of a one-stage pipeline: the worker under test is the last stage.
class TestCoordinator {
 public:
  explicit TestCoordinator(const WorkerOptions& options = TestOptions()) {
    auto worker = Worker::Start(options);
    INFO(Text(worker.status()));
    REQUIRE(worker.ok());
    worker_ = std::move(worker).value();
    OpenControl();
  }

  Worker& worker() { return *worker_; }
  Connection& data() { return *data_; }
  Connection& returned() { return *returned_; }

  void OpenControl() { control_ = Connect(Role::kControl); }
  // Destroying the connection closes the socket now (Close() alone waits for a reader).
  void CloseControl() { control_.reset(); }

  std::unique_ptr<Connection> Connect(Role role) {
    auto connection = TryConnect(worker_->port(), role);
    INFO(Text(connection.status()));
    REQUIRE(connection.ok());
    return std::move(connection).value();
  }

  // A control request and its reply.
  Message Call(Payload payload, uint64_t request_id = 0, uint32_t flags = 0) {
    if (request_id == 0) request_id = next_request_id_++;
    const Status sent = control_->Send(
        Message{.flags = flags, .request_id = request_id, .payload = std::move(payload)}, kTimeout);
    INFO(Text(sent));
    REQUIRE(sent.ok());
    auto reply = control_->Receive(kTimeout);
    INFO(Text(reply.status()));
    REQUIRE(reply.ok());
    REQUIRE(reply->request_id == request_id);
    return std::move(reply).value();
  }

  // ASSIGN as the last stage, accepting the worker's data connection to our return listener
  // while it is being handled. Returns the worker's reply.
  Message SendAssign(const Fingerprint& fingerprint, LayerRange layers, uint32_t max_sequences = 0,
                     uint32_t n_layer = kLayers) {
    auto listener = Listener::Listen("127.0.0.1:0");
    REQUIRE(listener.ok());
    std::unique_ptr<Connection> accepted;
    std::string accept_error;
    std::thread acceptor([&] {  // no Catch2 assertions on this thread
      auto connection = listener.value()->Accept();
      if (!connection.ok()) {
        accept_error = connection.status().message();
        return;
      }
      auto hello = Handshake(
          *connection.value(),
          HandshakeOptions{
              .role = Role::kData, .node_name = "test-coordinator", .connected_side = false},
          kTimeout);
      if (!hello.ok()) {
        accept_error = hello.status().message();
        return;
      }
      accepted = std::move(connection).value();
    });
    const uint64_t request_id = next_request_id_++;
    const Assign assign{.fingerprint = fingerprint,
                        .n_layer = n_layer,
                        .layer_begin = static_cast<uint32_t>(layers.begin),
                        .layer_end = static_cast<uint32_t>(layers.end),
                        .next_hop = "127.0.0.1:" + std::to_string(listener.value()->port()),
                        .wire_dtype = WireDType::kF32,
                        .max_sequences = max_sequences};
    const Status sent = control_->Send(
        Message{.flags = kFlagLastStage, .request_id = request_id, .payload = assign}, kTimeout);
    Result<Message> reply = sent.ok() ? control_->Receive(kTimeout) : Result<Message>(sent);
    // The worker connects back before answering ASSIGNED; on any other outcome it never will.
    if (!reply.ok() || reply->type() != MessageType::kAssigned) listener.value()->Close();
    acceptor.join();
    INFO(Text(reply.status()));
    REQUIRE(reply.ok());
    REQUIRE(reply->request_id == request_id);
    if (reply->type() == MessageType::kAssigned) {
      INFO(accept_error);
      REQUIRE(accepted);
      returned_ = std::move(accepted);
    }
    return std::move(reply).value();
  }

  // ASSIGN of the whole model, then the data connection into the worker.
  void AssignWholeModel(uint32_t max_sequences = 0) {
    const Message reply = SendAssign(ModelFingerprint(kAllLayers), kAllLayers, max_sequences);
    INFO("got " << MessageTypeName(reply.type()));
    REQUIRE(reply.type() == MessageType::kAssigned);
    data_ = Connect(Role::kData);
  }

  void SendForward(uint64_t sequence, uint32_t first_position, uint32_t capacity,
                   const std::vector<float>& values, uint32_t flags, uint32_t cols = kEmbd) {
    Forward forward;  // fields set one by one: later protocol fields keep their defaults
    forward.first_position = first_position;
    forward.capacity = capacity;
    forward.activations = Tensor{.dtype = WireDType::kF32,
                                 .rows = static_cast<uint32_t>(values.size() / cols),
                                 .cols = cols,
                                 .values = values};
    const Status sent = data_->Send(
        Message{.flags = flags, .request_id = sequence, .payload = std::move(forward)}, kTimeout);
    INFO(Text(sent));
    REQUIRE(sent.ok());
  }

  // The next RESULT or ERROR the worker sends back.
  Message ReceiveReturned() {
    auto message = returned_->Receive(kTimeout);
    INFO(Text(message.status()));
    REQUIRE(message.ok());
    return std::move(message).value();
  }
  // The same, when it must be about `sequence`.
  Message ReceiveReturned(uint64_t sequence) {
    Message message = ReceiveReturned();
    REQUIRE(message.request_id == sequence);
    return message;
  }

  ResultMsg ForwardExpectingResult(uint64_t sequence, uint32_t first_position, uint32_t capacity,
                                   const std::vector<float>& values, uint32_t flags) {
    SendForward(sequence, first_position, capacity, values, flags);
    Message message = ReceiveReturned(sequence);
    if (const auto* error = std::get_if<ErrorMsg>(&message.payload)) {
      FAIL("ERROR " << ErrorCodeName(error->code) << ": " << error->message);
    }
    REQUIRE(message.type() == MessageType::kResult);
    return std::get<ResultMsg>(std::move(message.payload));
  }

  // Starts `sequence` with a few rows and checks a RESULT comes back.
  void StartSequence(uint64_t sequence, int rows = 3, uint32_t capacity = 8) {
    const ResultMsg result = ForwardExpectingResult(
        sequence, 0, capacity, RandomActivations(rows, static_cast<uint32_t>(sequence)),
        kFlagLastChunk);
    REQUIRE(result.first_position == static_cast<uint32_t>(rows - 1));
  }

  ErrorMsg ForwardExpectingError(uint64_t sequence, uint32_t first_position, uint32_t capacity,
                                 const std::vector<float>& values, ErrorCode code,
                                 uint32_t cols = kEmbd) {
    SendForward(sequence, first_position, capacity, values, kFlagLastChunk, cols);
    return ExpectError(ReceiveReturned(sequence), code);
  }

  StatsReply RequestStats() {
    const Message reply = Call(net::Stats{});
    INFO("got " << MessageTypeName(reply.type()));
    REQUIRE(reply.type() == MessageType::kStatsReply);
    return std::get<StatsReply>(reply.payload);
  }
  uint32_t SequencesInUse() { return RequestStats().sequences_in_use; }

  // Polls STATS until `count` sequences are in use or `limit` passes; returns the last count.
  uint32_t WaitForSequencesInUse(uint32_t count, Duration limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    uint32_t in_use = SequencesInUse();
    while (in_use != count && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(50ms);
      in_use = SequencesInUse();
    }
    return in_use;
  }

  void ReleaseSequence(uint64_t sequence) {
    const Message reply = Call(net::Release{}, sequence);
    INFO("got " << MessageTypeName(reply.type()));
    REQUIRE(reply.type() == MessageType::kOk);
  }

 private:
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<Connection> control_;
  std::unique_ptr<Connection> data_;
  std::unique_ptr<Connection> returned_;
  uint64_t next_request_id_ = 1000;  // control ids, far from the sequence ids the tests use
};

}  // namespace

TEST_CASE("a last-stage worker returns exactly the activations of running its layers locally",
          "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  const std::vector<float> prompt = RandomActivations(5, 1);

  // Prefill with LAST_CHUNK: only the last row comes back, labelled with its position.
  LocalStage local(8);
  ResultMsg result = coordinator.ForwardExpectingResult(1, 0, 8, prompt, kFlagLastChunk);
  REQUIRE(result.first_position == 4);
  REQUIRE(result.activations.rows == 1);
  REQUIRE(result.activations.cols == kEmbd);
  REQUIRE(SameBits(result.activations.values, LastRow(local.Forward(prompt))));

  // A decode step continues the worker's KV cache exactly as the local one.
  const std::vector<float> token = RandomActivations(1, 2);
  result = coordinator.ForwardExpectingResult(1, 5, 8, token, kFlagLastChunk);
  REQUIRE(result.first_position == 5);
  REQUIRE(SameBits(result.activations.values, local.Forward(token)));

  // ALL_ROWS returns every row of the chunk.
  LocalStage local_all_rows(8);
  result = coordinator.ForwardExpectingResult(2, 0, 8, prompt, kFlagLastChunk | kFlagAllRows);
  REQUIRE(result.first_position == 0);
  REQUIRE(result.activations.rows == 5);
  REQUIRE(SameBits(result.activations.values, local_all_rows.Forward(prompt)));

  // A prefill in two chunks: the first (no flags) yields no frame, so the next one back is the
  // second chunk's RESULT, equal to the local run chunked the same way.
  LocalStage local_chunked(8);
  const std::vector<float> head(prompt.begin(), prompt.begin() + 3 * kEmbd);
  const std::vector<float> tail(prompt.begin() + 3 * kEmbd, prompt.end());
  coordinator.SendForward(3, 0, 8, head, 0);
  (void)local_chunked.Forward(head);
  result = coordinator.ForwardExpectingResult(3, 3, 8, tail, kFlagLastChunk);
  REQUIRE(result.first_position == 4);
  REQUIRE(SameBits(result.activations.values, LastRow(local_chunked.Forward(tail))));
}

TEST_CASE("decode steps of several sequences queued together match running each alone",
          "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  constexpr int kSequences = 6, kPrompt = 3, kSteps = 5, kCapacity = kPrompt + kSteps;
  std::vector<std::unique_ptr<LocalStage>> local;
  for (int s = 0; s < kSequences; ++s) {
    local.push_back(std::make_unique<LocalStage>(kCapacity));
    const std::vector<float> prompt = RandomActivations(kPrompt, 100 + s);
    const ResultMsg result =
        coordinator.ForwardExpectingResult(s + 1, 0, kCapacity, prompt, kFlagLastChunk);
    REQUIRE(SameBits(result.activations.values, LastRow(local[s]->Forward(prompt))));
  }

  // Full-context chunks of another sequence (no flags: no RESULT) keep the compute thread busy,
  // so the decode steps sent next queue up behind them and the worker batches them.
  const std::vector<float> filler = RandomActivations(kPositions, 99);
  for (int i = 0; i < 20; ++i) coordinator.SendForward(1000, 0, kPositions, filler, 0);
  std::vector<std::vector<std::vector<float>>> tokens(kSequences);
  for (int step = 0; step < kSteps; ++step) {
    for (int s = 0; s < kSequences; ++s) {
      tokens[s].push_back(RandomActivations(1, 1000 * (s + 1) + step));
      coordinator.SendForward(s + 1, kPrompt + step, kCapacity, tokens[s][step], kFlagLastChunk);
    }
  }

  // Each sequence's RESULTs come in order; different sequences may interleave differently.
  std::vector<int> next_step(kSequences, 0);
  std::map<uint64_t, int> steps_per_compute;  // a batch's steps share one compute time
  for (int i = 0; i < kSequences * kSteps; ++i) {
    const Message message = coordinator.ReceiveReturned();
    INFO("got " << MessageTypeName(message.type()) << " for sequence " << message.request_id);
    REQUIRE(message.type() == MessageType::kResult);
    REQUIRE(message.request_id >= 1);
    REQUIRE(message.request_id <= static_cast<uint64_t>(kSequences));
    const int s = static_cast<int>(message.request_id) - 1;
    const int step = next_step[s]++;
    const ResultMsg& result = std::get<ResultMsg>(message.payload);
    REQUIRE(result.first_position == static_cast<uint32_t>(kPrompt + step));
    REQUIRE(SameBits(result.activations.values, local[s]->Forward(tokens[s][step])));
    if (!result.timings.empty()) steps_per_compute[result.timings.back().compute_ns]++;
  }
  int largest_batch = 0;
  for (const auto& [compute_ns, steps] : steps_per_compute) {
    largest_batch = std::max(largest_batch, steps);
  }
  UNSCOPED_INFO("largest batch seen: " << largest_batch << " decode steps");
  REQUIRE(largest_batch > 1);  // else this test did not exercise batching
}

TEST_CASE("a last stage appends its own timing to those of the stages before it", "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  Forward forward;
  forward.first_position = 0;
  forward.capacity = 8;
  forward.activations = Tensor{.rows = 2, .cols = kEmbd, .values = RandomActivations(2, 21)};
  forward.timings = {StageTiming{.queue_ns = 11, .compute_ns = 22}};  // as if from stage 1
  REQUIRE(coordinator.data()
              .Send(Message{.flags = kFlagLastChunk, .request_id = 1, .payload = forward}, kTimeout)
              .ok());
  const Message message = coordinator.ReceiveReturned(1);
  REQUIRE(message.type() == MessageType::kResult);
  const auto& timings = std::get<ResultMsg>(message.payload).timings;
  REQUIRE(timings.size() == 2);
  REQUIRE(timings[0] == StageTiming{.queue_ns = 11, .compute_ns = 22});
  REQUIRE(timings[1].compute_ns > 0);
}

TEST_CASE("a worker refuses a sequence beyond max_sequences with cache_full and keeps serving",
          "[worker]") {
  WorkerOptions options = TestOptions();
  options.max_sequences = 2;
  TestCoordinator coordinator(options);
  coordinator.AssignWholeModel();
  REQUIRE(coordinator.RequestStats().max_sequences == 2);

  coordinator.StartSequence(1);
  coordinator.StartSequence(2);
  REQUIRE(coordinator.SequencesInUse() == 2);
  const ErrorMsg full =
      coordinator.ForwardExpectingError(3, 0, 8, RandomActivations(3, 3), ErrorCode::kCacheFull);
  REQUIRE_THAT(full.message, Catch::Contains("slots"));
  REQUIRE(coordinator.SequencesInUse() == 2);

  coordinator.ReleaseSequence(1);
  REQUIRE(coordinator.SequencesInUse() == 1);
  coordinator.StartSequence(3);
  REQUIRE(coordinator.SequencesInUse() == 2);

  // The released sequence is gone: releasing it again is an error, continuing it too.
  ExpectError(coordinator.Call(Release{}, 1), ErrorCode::kUnknownSequence);
  coordinator.ForwardExpectingError(1, 3, 8, RandomActivations(1, 4), ErrorCode::kUnknownSequence);

  coordinator.ReleaseSequence(2);
  coordinator.ReleaseSequence(3);
  REQUIRE(coordinator.SequencesInUse() == 0);
}

TEST_CASE("a worker answers bad FORWARDs with an ERROR and keeps serving", "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  const std::vector<float> three_rows = RandomActivations(3, 7);
  const std::vector<float> one_row = RandomActivations(1, 8);

  SECTION("continuing a sequence that was never started") {
    const ErrorMsg error =
        coordinator.ForwardExpectingError(99, 4, 8, one_row, ErrorCode::kUnknownSequence);
    REQUIRE_THAT(error.message, Catch::Contains("99"));
  }
  SECTION("a chunk that does not continue the cache") {
    coordinator.StartSequence(1, 3);
    coordinator.ForwardExpectingError(1, 2, 8, one_row, ErrorCode::kBadRequest);  // overlaps
    coordinator.ForwardExpectingError(1, 5, 8, one_row, ErrorCode::kBadRequest);  // leaves a gap
    // Past the capacity the sequence was started with.
    coordinator.ForwardExpectingError(1, 3, 8, RandomActivations(6, 9), ErrorCode::kBadRequest);
    // The refused chunks left the cache alone: the right position still works.
    REQUIRE(coordinator.ForwardExpectingResult(1, 3, 8, one_row, kFlagLastChunk).first_position ==
            3);
  }
  SECTION("activations with the wrong number of columns") {
    const ErrorMsg error = coordinator.ForwardExpectingError(
        1, 0, 8, std::vector<float>(3 * 8, 0.5f), ErrorCode::kBadRequest, /*cols=*/8);
    REQUIRE_THAT(error.message, Catch::Contains("expected rows x 16"));
  }
  SECTION("a capacity larger than the model's context") {
    const ErrorMsg error =
        coordinator.ForwardExpectingError(1, 0, kPositions + 1, three_rows, ErrorCode::kBadRequest);
    REQUIRE_THAT(error.message, Catch::Contains("capacity 33"));
    coordinator.ForwardExpectingError(2, 0, 0, three_rows, ErrorCode::kBadRequest);
  }
  // After any of those errors the worker still serves a good request.
  coordinator.StartSequence(42);
}

TEST_CASE("ASSIGN of weights the worker does not hold is refused with wrong_model", "[worker]") {
  TestCoordinator coordinator;

  SECTION("a different fingerprint") {
    Fingerprint wrong = ModelFingerprint(kAllLayers);
    wrong[0] ^= 1;
    const Message reply = coordinator.SendAssign(wrong, kAllLayers);
    REQUIRE_THAT(ExpectError(reply, ErrorCode::kWrongModel).message,
                 Catch::Contains("different weights"));
  }
  SECTION("the fingerprint of other layers") {
    const Message reply = coordinator.SendAssign(ModelFingerprint({0, 1}), {1, 2});
    REQUIRE_THAT(ExpectError(reply, ErrorCode::kWrongModel).message,
                 Catch::Contains("different weights"));
  }
  SECTION("layers beyond n_layer") {
    const Message reply = coordinator.SendAssign(ModelFingerprint(kAllLayers), {1, 3});
    REQUIRE_THAT(ExpectError(reply, ErrorCode::kWrongModel).message,
                 Catch::Contains("2-layer model"));
  }
  SECTION("a model with another number of layers") {
    const Message reply = coordinator.SendAssign(ModelFingerprint(kAllLayers), kAllLayers, 0, 12);
    ExpectError(reply, ErrorCode::kWrongModel);
  }
  // A refused ASSIGN leaves the connection usable: the right one succeeds afterwards.
  coordinator.AssignWholeModel();
  coordinator.StartSequence(1);
}

TEST_CASE("a worker frees sequences nobody touched for the idle timeout", "[worker]") {
  WorkerOptions options = TestOptions();
  options.idle_timeout = 1s;
  TestCoordinator coordinator(options);
  coordinator.AssignWholeModel();
  coordinator.StartSequence(1);
  REQUIRE(coordinator.SequencesInUse() == 1);

  std::this_thread::sleep_for(2500ms);
  // The sweep runs about once a second; allow a little more for a slow (sanitizer) build.
  REQUIRE(coordinator.WaitForSequencesInUse(0, 2s) == 0);
  coordinator.ForwardExpectingError(1, 3, 8, RandomActivations(1, 5), ErrorCode::kUnknownSequence);
  coordinator.StartSequence(2);  // and it still serves
}

// Regression: idle sequences used to be swept only after a whole second with no job queued, so
// under steady traffic an abandoned sequence was never freed.
TEST_CASE("a worker frees idle sequences even while other sequences keep it busy", "[worker]") {
  WorkerOptions options = TestOptions();
  options.idle_timeout = 1s;
  TestCoordinator coordinator(options);
  coordinator.AssignWholeModel();
  coordinator.StartSequence(1);  // abandoned

  // Sequence 2 is restarted every 100 ms for 3 s: never idle, and the worker never is either.
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    coordinator.StartSequence(2);
    std::this_thread::sleep_for(100ms);
  }
  REQUIRE(coordinator.SequencesInUse() == 1);
}

TEST_CASE("closing the coordinator's control connection frees its sequences", "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  coordinator.StartSequence(1);
  coordinator.StartSequence(2);
  REQUIRE(coordinator.SequencesInUse() == 2);

  coordinator.CloseControl();
  coordinator.OpenControl();  // a new control connection, no ASSIGN
  REQUIRE(coordinator.WaitForSequencesInUse(0, 2s) == 0);
}

TEST_CASE("a worker with an auth key accepts only peers with the same key", "[worker]") {
  WorkerOptions options = TestOptions();
  options.auth_key = AuthKey(32, 'k');
  auto worker = Worker::Start(options);
  REQUIRE(worker.ok());
  const uint16_t port = worker.value()->port();

  auto without_key = TryConnect(port, Role::kControl);
  REQUIRE_FALSE(without_key.ok());
  REQUIRE_THAT(without_key.status().message(), Catch::Contains("auth"));

  const AuthKey wrong_key(32, 'x');
  auto with_wrong_key = TryConnect(port, Role::kControl, &wrong_key);
  REQUIRE_FALSE(with_wrong_key.ok());
  REQUIRE_THAT(with_wrong_key.status().message(), Catch::Contains("auth"));

  auto with_key = TryConnect(port, Role::kControl, &*options.auth_key);
  INFO(Text(with_key.status()));
  REQUIRE(with_key.ok());
  // The worker accepted too: it answers a request.
  Connection& control = *with_key.value();
  REQUIRE(control.Send(Message{.request_id = 7, .payload = Ping{123}}, kTimeout).ok());
  auto pong = control.Receive(kTimeout);
  INFO(Text(pong.status()));
  REQUIRE(pong.ok());
  REQUIRE(std::get<Pong>(pong->payload).timestamp_ns == 123);
}

TEST_CASE("Stop() returns promptly with FORWARDs queued, failing them with shutting_down",
          "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel(4);
  // Many full-context chunks so that some are still queued or computing when Stop() comes.
  const std::vector<float> chunk = RandomActivations(kPositions, 11);
  constexpr int kForwards = 300;
  for (int i = 0; i < kForwards; ++i) {
    coordinator.SendForward(1 + i % 4, 0, kPositions, chunk, kFlagLastChunk | kFlagAllRows);
  }
  const Duration stop_took = RunWithin(10s, "Stop()", [&] { coordinator.worker().Stop(); });
  REQUIRE(stop_took < 2s);
  RunWithin(2s, "Wait()", [&] { coordinator.worker().Wait(); });

  // Whatever came back is a RESULT or a shutting_down ERROR, nothing else.
  int results = 0, shutting_down = 0;
  while (true) {
    auto message = coordinator.returned().Receive(500ms);
    if (!message.ok()) break;
    if (message->type() == MessageType::kResult) {
      ++results;
    } else {
      ExpectError(*message, ErrorCode::kShuttingDown);
      ++shutting_down;
    }
  }
  UNSCOPED_INFO(results << " RESULTs and " << shutting_down << " shutting_down ERRORs");
  REQUIRE(results + shutting_down <= kForwards);
}

// Regression: a compute thread blocked writing to a next hop that does not read used to be joined
// before the next-hop connection was closed, so Stop() waited for io_timeout.
TEST_CASE("Stop() returns promptly while the next hop is not reading", "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel(4);
  // ~16 MB of ALL_ROWS RESULTs nobody reads: more than the loopback socket buffers hold, so the
  // worker's compute thread blocks in a write with the rest of the FORWARDs queued behind it.
  const std::vector<float> chunk = RandomActivations(kPositions, 12);
  constexpr uint64_t kForwards = 8000;
  for (uint64_t i = 0; i < kForwards; ++i) {
    coordinator.SendForward(1 + i % 4, 0, kPositions, chunk, kFlagLastChunk | kFlagAllRows);
  }
  // Wait until the worker's forward count stops moving: it is blocked in that write (well
  // within io_timeout, after which the write would fail and the queue drain).
  uint64_t forwards = coordinator.RequestStats().forwards, previous = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  do {
    std::this_thread::sleep_for(300ms);
    previous = forwards;
    forwards = coordinator.RequestStats().forwards;
  } while ((forwards == 0 || forwards != previous) && std::chrono::steady_clock::now() < deadline);
  REQUIRE(forwards > 0);
  REQUIRE(forwards == previous);
  REQUIRE(forwards < kForwards);
  const Duration stop_took = RunWithin(30s, "Stop()", [&] { coordinator.worker().Stop(); });
  REQUIRE(stop_took < 2s);
}

// Regression: Connection::Close() used to only post the close to the connection's io_context,
// which nobody ran once the compute thread had exited, so the next hop's socket stayed open.
TEST_CASE("after Stop() the next hop sees its data connection closed", "[worker]") {
  TestCoordinator coordinator;
  coordinator.AssignWholeModel();
  coordinator.StartSequence(1);
  RunWithin(10s, "Stop()", [&] { coordinator.worker().Stop(); });
  auto message = coordinator.returned().Receive(2s);
  REQUIRE_FALSE(message.ok());
  REQUIRE_THAT(message.status().message(), Catch::Contains("closed by"));
}
