// Integration test of `iris serve`: starts the server on a free loopback port with a small
// checkpoint and drives it through the generated gRPC client.
//   serve_integration_test IRIS_BINARY CHECKPOINT_DIR
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "serve_test_util.h"

namespace {

using iris::v1::GenerateRequest;
using iris::v1::GenerateResponse;
using namespace iris_test;

const char* kKey = "test-secret-key";

void with_key(grpc::ClientContext& ctx, const std::string& key = kKey) {
  ctx.AddMetadata("authorization", "Bearer " + key);
}

StreamResult generate(iris::v1::Inference::Stub& stub, const GenerateRequest& req,
                      bool auth = true) {
  return collect(
      req, [&](grpc::ClientContext* ctx, const GenerateRequest& r) { return stub.Generate(ctx, r); },
      [&](grpc::ClientContext& ctx) {
        if (auth) with_key(ctx);
      });
}

iris::v1::ServerInfo info(iris::v1::Inference::Stub& stub) {
  grpc::ClientContext ctx;
  with_key(ctx);
  iris::v1::GetServerInfoRequest req;
  iris::v1::ServerInfo resp;
  grpc::Status s = stub.GetServerInfo(&ctx, req, &resp);
  EXPECT(s.ok(), "GetServerInfo: %s", s.error_message().c_str());
  return resp;
}

// Largest |logprob - want| over the streamed tokens of choice 0; `count` gets how many
// logprobs were streamed.
// The largest |logprob - want| over the stream; infinity when the counts differ or any value
// is NaN (so a comparison can never pass on missing or broken numbers).
float max_logprob_diff(const StreamResult& r, const std::vector<float>& want,
                       size_t* count = nullptr) {
  float worst = 0;
  size_t k = 0;
  for (const auto& m : r.messages)
    for (float lp : m.logprobs()) {
      if (k < want.size()) {
        const float d = std::fabs(lp - want[k]);
        worst = std::isnan(d) ? INFINITY : std::max(worst, d);
      }
      ++k;
    }
  if (count) *count = k;
  if (k != want.size() || want.empty()) return INFINITY;
  return worst;
}

// A fixture file, or an empty object (and a failed check) when it cannot be read.
nlohmann::json read_json(const std::string& path) {
  try {
    std::ifstream in(path);
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    EXPECT(false, "%s unreadable: %s", path.c_str(), e.what());
    return nlohmann::json::object();
  }
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

StreamResult chat(iris::v1::Inference::Stub& stub, const iris::v1::ChatRequest& req) {
  return collect(
      req, [&](grpc::ClientContext* ctx, const iris::v1::ChatRequest& r) { return stub.Chat(ctx, r); },
      [](grpc::ClientContext&) {});
}

void add_image(iris::v1::ContentPart* part, const std::string& file) {
  part->mutable_image()->set_data(read_file(file));
  part->mutable_image()->set_mime_type(file.size() > 4 && file.substr(file.size() - 4) == ".png"
                                           ? "image/png"
                                           : "image/jpeg");
}

// Chat with image parts on clip-llava (a tokenizer and a LLaVA-style template that loops over
// content parts): the prompt the server builds and its greedy tokens equal jinja2 + the
// independent reference (chat_fixtures.json); images the server has seen come from the
// encoder cache; placeholder text typed by the user stays text; bad parts name their field.
void check_vision_chat(iris::v1::Inference::Stub& stub, const std::string& vision,
                       const std::string& iris, const std::string& address) {
  const nlohmann::json fx = read_json(vision + "/chat_fixtures.json");
  const iris::v1::ServerInfo before = info(stub);
  iris::v1::ChatRequest first;
  for (const auto& c : fx.value("cases", nlohmann::json::array())) {
    iris::v1::ChatRequest req;
    for (const auto& m : c["messages"]) {
      iris::v1::ChatMessage* msg = req.add_messages();
      msg->set_role(m["role"].get<std::string>());
      for (const auto& p : m["content"]) {
        if (p["type"] == "text") {
          msg->add_content()->set_text(p["text"].get<std::string>());
        } else {
          add_image(msg->add_content(), p["file"].get<std::string>());
        }
      }
    }
    const auto want = c["output_ids"].get<std::vector<int32_t>>();
    const auto want_lps = c["logprobs"].get<std::vector<float>>();
    req.set_max_tokens(static_cast<int>(want.size()));
    req.set_temperature(0.0f);
    req.set_ignore_eos(true);
    req.set_logprobs(0);
    req.set_return_prompt_token_ids(true);
    if (first.messages_size() == 0) first = req;
    StreamResult r = chat(stub, req);
    const std::string what = c["rendered"].get<std::string>();
    EXPECT(r.status.ok(), "chat with images (%s): %s", what.c_str(), r.status.error_message().c_str());
    EXPECT(r.prompt_ids() == c["prompt_ids"].get<std::vector<int32_t>>(),
           "chat prompt differs from jinja2 + tokenizer (%s)", what.c_str());
    EXPECT(r.ids() == want, "chat tokens differ from the reference (%s)", what.c_str());
    const float worst = max_logprob_diff(r, want_lps);
    EXPECT(worst <= 1e-4f, "chat logprob max diff %g (%s)", worst, what.c_str());
  }
  // The chat images are the Generate test's files, already encoded: three more cache hits,
  // nothing encoded again.
  const iris::v1::ServerInfo after = info(stub);
  EXPECT(after.images_encoded() == before.images_encoded(), "images encoded again: %lld -> %lld",
         static_cast<long long>(before.images_encoded()), static_cast<long long>(after.images_encoded()));
  EXPECT(after.encoder_cache_hits() >= before.encoder_cache_hits() + 3,
         "encoder cache hits %lld -> %lld", static_cast<long long>(before.encoder_cache_hits()),
         static_cast<long long>(after.encoder_cache_hits()));
  EXPECT(after.encoder_cache_queries() >= after.encoder_cache_hits(), "queries < hits");

  // The user types the placeholder: it stays text (its bytes), and the one image part still
  // gets the one image slot.
  if (first.messages_size() > 0) {
    iris::v1::ChatRequest typed = first;
    typed.mutable_messages(0)->mutable_content(1)->set_text("Is <image> a tag?");
    StreamResult r = chat(stub, typed);
    EXPECT(r.status.ok(), "typed placeholder: %s", r.status.error_message().c_str());
    const std::vector<int32_t> ids = r.prompt_ids();
    const std::vector<int32_t> bytes = {3 + '<', 3 + 'i', 3 + 'm', 3 + 'a', 3 + 'g', 3 + 'e', 3 + '>'};
    EXPECT(std::search(ids.begin(), ids.end(), bytes.begin(), bytes.end()) != ids.end(),
           "typed <image> did not stay text");
    EXPECT(std::count(ids.begin(), ids.end(), 319) == 16, "expected one image run of 16 tokens, got %d",
           static_cast<int>(std::count(ids.begin(), ids.end(), 319)));

    struct BadChat {
      const char* what;
      std::function<void(iris::v1::ChatRequest&)> edit;
      const char* field;
    };
    const std::vector<BadChat> bad = {
        {"garbage image", [](iris::v1::ChatRequest& q) {
           q.mutable_messages(0)->mutable_content(0)->mutable_image()->set_data("GIF89a not really");
         }, "messages[0].content[0].image.data"},
        {"empty image part", [](iris::v1::ChatRequest& q) {
           q.mutable_messages(0)->mutable_content(0)->mutable_image()->clear_data();
         }, "messages[0].content[0].image.data"},
        {"bad mime type", [](iris::v1::ChatRequest& q) {
           q.mutable_messages(0)->mutable_content(0)->mutable_image()->set_mime_type("image/webp");
         }, "messages[0].content[0].image.mime_type"},
        {"too many images", [](iris::v1::ChatRequest& q) {
           for (int i = 0; i < 8; ++i) *q.mutable_messages(0)->add_content() = q.messages(0).content(0);
         }, "at most 8"},
    };
    for (const BadChat& b : bad) {
      iris::v1::ChatRequest q = first;
      b.edit(q);
      StreamResult br = chat(stub, q);
      EXPECT(br.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                 br.status.error_message().find(b.field) != std::string::npos,
             "chat %s: code %d (%s)", b.what, br.status.error_code(), br.status.error_message().c_str());
    }
    // A text-only chat on the vision model: parts without images, no placeholder.
    iris::v1::ChatRequest plain = first;
    plain.mutable_messages(0)->mutable_content()->DeleteSubrange(0, 1);
    StreamResult pr = chat(stub, plain);
    const std::vector<int32_t> plain_ids = pr.prompt_ids();
    EXPECT(pr.status.ok() && !plain_ids.empty() &&
               std::count(plain_ids.begin(), plain_ids.end(), 319) == 0,
           "text-only chat: %s", pr.status.error_message().c_str());
  }
  // `iris client chat --image` sends the file as an image part of the user message.
  if (first.messages_size() > 0) {
    const std::string file = first.messages(0).content(0).image().mime_type() == "image/png"
                                 ? vision + "/clip-llava/image0.png"
                                 : vision + "/clip-llava/image1.jpeg";
    const auto hits = info(stub).encoder_cache_hits();
    int st = -1;
    run_capture("'" + iris + "' client chat --address " + address + " --image '" + file +
                    "' 'Describe it in one word.' --temperature 0 --max-tokens 4 --ignore-eos 2>&1",
                &st);
    EXPECT(st == 0, "iris client chat --image exited %d", st);
    EXPECT(info(stub).encoder_cache_hits() > hits, "iris client chat --image sent no image");
  }
  // A call whose deadline passes while its image is still being decoded ends with
  // DEADLINE_EXCEEDED; the decoded request is then dropped, never run.
  if (first.messages_size() > 0) {
    iris::v1::ChatRequest big = first;
    add_image(big.mutable_messages(0)->mutable_content(0), vision + "/clip-llava/large.jpeg");
    const iris::v1::ServerInfo pre = info(stub);
    StreamResult r = collect(
        big, [&](grpc::ClientContext* ctx, const iris::v1::ChatRequest& q) { return stub.Chat(ctx, q); },
        [](grpc::ClientContext& ctx) {
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(30));
        });
    EXPECT(r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED,
           "large image with a 30 ms deadline: code %d (%s)", r.status.error_code(),
           r.status.error_message().c_str());
    // Wait for the decode to finish: the new image must never reach the engine's encoder.
    std::this_thread::sleep_for(std::chrono::seconds(3));
    const iris::v1::ServerInfo quiet = info(stub);
    EXPECT(quiet.images_encoded() == pre.images_encoded() &&
               quiet.encoder_cache_queries() == pre.encoder_cache_queries() &&
               quiet.running() == 0 && quiet.waiting() == 0,
           "a call cancelled while decoding still ran: encoded %lld -> %lld, %d running",
           static_cast<long long>(pre.images_encoded()), static_cast<long long>(quiet.images_encoded()),
           quiet.running());
  }
  const iris::v1::ServerInfo end = info(stub);
  EXPECT(end.kv_blocks_free() == end.kv_blocks_total(), "KV blocks leaked: %d of %d free",
         end.kv_blocks_free(), end.kv_blocks_total());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: %s IRIS_BINARY CHECKPOINT_DIR [VISION_DIR]\n", argv[0]);
    return 2;
  }
  const std::string iris = argv[1], model = argv[2];
  const std::vector<int32_t> prompt = {1, 17, 42, 99, 7, 250};
  const int kMaxTokens = 12;

  // Reference: the same greedy request through `iris generate --json`.
  std::string ids_arg;
  for (size_t i = 0; i < prompt.size(); ++i) ids_arg += (i ? "," : "") + std::to_string(prompt[i]);
  const std::string out = run_capture("'" + iris + "' generate --model '" + model + "' --prompt-ids " +
                                      ids_arg + " --max-tokens " + std::to_string(kMaxTokens) +
                                      " --temperature 0 --ignore-eos --json");
  std::vector<int32_t> expected;
  std::vector<float> expected_lps;
  try {
    expected = nlohmann::json::parse(out).at("output_ids").get<std::vector<int32_t>>();
    expected_lps = nlohmann::json::parse(out).at("logprobs").get<std::vector<float>>();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAIL: iris generate --json gave unparsable output (%s): %s\n", e.what(),
                 out.c_str());
    return 1;
  }
  EXPECT(expected.size() == static_cast<size_t>(kMaxTokens), "reference has %zu ids", expected.size());

  ServerProcess server;
  server.start(iris, {"--model", model, "--api-key", kKey, "--num-kv-blocks", "64",
                      "--max-num-seqs", "16", "--threads", "1", "--drain-timeout", "5"});
  const int port = server.port;
  auto channel = grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(),
                                           quick_reconnect());
  auto hstub = grpc::health::v1::Health::NewStub(channel);
  auto stub = iris::v1::Inference::NewStub(channel);
  if (!server.wait_serving(channel)) return 1;
  std::fprintf(stderr, "server SERVING on port %d\n", port);

  // Server info.
  const iris::v1::ServerInfo si = info(*stub);
  EXPECT(si.kv_blocks_total() > 0, "kv_blocks_total %d", si.kv_blocks_total());
  EXPECT(si.kv_blocks_free() == si.kv_blocks_total(), "kv_blocks_free %d of %d", si.kv_blocks_free(),
         si.kv_blocks_total());
  EXPECT(si.max_context_length() == 256, "max_context_length %lld",
         static_cast<long long>(si.max_context_length()));
  EXPECT(!si.model_id().empty() && model.size() >= si.model_id().size() &&
             model.compare(model.size() - si.model_id().size(), si.model_id().size(), si.model_id()) == 0,
         "model_id '%s'", si.model_id().c_str());
  EXPECT(!si.version().empty(), "empty version");

  // API key enforcement.
  {
    grpc::ClientContext ctx;
    iris::v1::ServerInfo resp;
    grpc::Status s = stub->GetServerInfo(&ctx, {}, &resp);
    EXPECT(s.error_code() == grpc::StatusCode::UNAUTHENTICATED, "no key: code %d", s.error_code());
  }
  {
    grpc::ClientContext ctx;
    with_key(ctx, "wrong-key");
    iris::v1::ServerInfo resp;
    grpc::Status s = stub->GetServerInfo(&ctx, {}, &resp);
    EXPECT(s.error_code() == grpc::StatusCode::UNAUTHENTICATED, "wrong key: code %d", s.error_code());
  }
  {
    StreamResult r = generate(*stub, greedy_request(prompt, 4), /*auth=*/false);
    EXPECT(r.status.error_code() == grpc::StatusCode::UNAUTHENTICATED, "Generate no key: code %d",
           r.status.error_code());
    EXPECT(r.messages.empty(), "unauthenticated Generate streamed %zu messages", r.messages.size());
  }

  // Greedy streaming parity with `iris generate --json`.
  {
    GenerateRequest req = greedy_request(prompt, kMaxTokens);
    req.set_model(si.model_id());
    req.set_logprobs(0);
    StreamResult r = generate(*stub, req);
    EXPECT(r.status.ok(), "greedy Generate: %s", r.status.error_message().c_str());
    EXPECT(r.ids() == expected, "streamed ids differ from iris generate --json");
    EXPECT(!r.messages.empty() && r.messages.back().finish_reason() == "length", "finish_reason '%s'",
           r.messages.empty() ? "" : r.messages.back().finish_reason().c_str());
    EXPECT(!r.messages.empty() && r.messages.back().usage().completion_tokens() == kMaxTokens &&
               r.messages.back().usage().prompt_tokens() == static_cast<int>(prompt.size()),
           "usage");
    size_t nlp = 0;
    for (const auto& m : r.messages) nlp += m.logprobs_size();
    EXPECT(nlp == expected.size(), "%zu logprobs for %zu tokens", nlp, expected.size());
  }
  // n = 3 greedy choices: each equals the reference.
  {
    GenerateRequest req = greedy_request(prompt, kMaxTokens);
    req.set_n(3);
    StreamResult r = generate(*stub, req);
    EXPECT(r.status.ok(), "n=3 Generate: %s", r.status.error_message().c_str());
    for (int i = 0; i < 3; ++i) EXPECT(r.ids(i) == expected, "choice %d differs", i);
  }

  // Bad inputs: status code and the field named in the message; the server stays healthy.
  struct Bad {
    const char* name;
    std::function<void(GenerateRequest&)> edit;
    grpc::StatusCode code;
    const char* field;
  };
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Bad> bad = {
      {"no prompt", [](GenerateRequest& r) { r.clear_prompt(); }, grpc::StatusCode::INVALID_ARGUMENT, "prompt"},
      {"empty token_ids", [](GenerateRequest& r) { r.mutable_token_ids()->clear_ids(); },
       grpc::StatusCode::INVALID_ARGUMENT, "prompt"},
      {"empty text", [](GenerateRequest& r) { r.set_text(""); }, grpc::StatusCode::INVALID_ARGUMENT, "text"},
      {"id >= vocab", [](GenerateRequest& r) { r.mutable_token_ids()->add_ids(320); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids"},
      {"negative id", [](GenerateRequest& r) { r.mutable_token_ids()->add_ids(-1); },
       grpc::StatusCode::INVALID_ARGUMENT, "token_ids"},
      {"max_tokens 0", [](GenerateRequest& r) { r.set_max_tokens(0); }, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"max_tokens -3", [](GenerateRequest& r) { r.set_max_tokens(-3); }, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"temperature -1", [](GenerateRequest& r) { r.set_temperature(-1); }, grpc::StatusCode::INVALID_ARGUMENT, "temperature"},
      {"temperature NaN", [&](GenerateRequest& r) { r.set_temperature(nan); }, grpc::StatusCode::INVALID_ARGUMENT, "temperature"},
      {"top_p 0", [](GenerateRequest& r) { r.set_top_p(0); }, grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
      {"top_p 1.5", [](GenerateRequest& r) { r.set_top_p(1.5f); }, grpc::StatusCode::INVALID_ARGUMENT, "top_p"},
      {"top_k -2", [](GenerateRequest& r) { r.set_top_k(-2); }, grpc::StatusCode::INVALID_ARGUMENT, "top_k"},
      {"min_p 1.5", [](GenerateRequest& r) { r.set_min_p(1.5f); }, grpc::StatusCode::INVALID_ARGUMENT, "min_p"},
      {"min_p -0.1", [](GenerateRequest& r) { r.set_min_p(-0.1f); }, grpc::StatusCode::INVALID_ARGUMENT, "min_p"},
      {"n 0", [](GenerateRequest& r) { r.set_n(0); }, grpc::StatusCode::INVALID_ARGUMENT, "n"},
      {"n 17", [](GenerateRequest& r) { r.set_n(17); }, grpc::StatusCode::INVALID_ARGUMENT, "n"},
      {"unknown model", [](GenerateRequest& r) { r.set_model("no-such-model"); }, grpc::StatusCode::NOT_FOUND, "model"},
      {"beyond context", [](GenerateRequest& r) { r.set_max_tokens(251); }, grpc::StatusCode::INVALID_ARGUMENT, "max_tokens"},
      {"image for a text model", [](GenerateRequest& r) { r.add_images()->set_data("\x89PNG"); },
       grpc::StatusCode::INVALID_ARGUMENT, "images"},
      // Rejected by the engine at admission (stop strings need a tokenizer): arrives as an
      // EngineOutput with `error`.
      {"engine admission", [](GenerateRequest& r) { r.add_stop("x"); }, grpc::StatusCode::INVALID_ARGUMENT, "stop"},
  };
  for (const Bad& b : bad) {
    GenerateRequest req = greedy_request(prompt, 4);
    b.edit(req);
    StreamResult r = generate(*stub, req);
    EXPECT(r.status.error_code() == b.code, "%s: code %d (%s), want %d", b.name, r.status.error_code(),
           r.status.error_message().c_str(), b.code);
    EXPECT(r.status.error_message().find(b.field) != std::string::npos, "%s: message '%s' does not name %s",
           b.name, r.status.error_message().c_str(), b.field);
    EXPECT(r.messages.empty(), "%s: %zu messages streamed", b.name, r.messages.size());
    EXPECT(health(*hstub) == grpc::health::v1::HealthCheckResponse::SERVING, "%s: server unhealthy", b.name);
  }
  {
    // Exactly the context is fine.
    StreamResult r = generate(*stub, greedy_request(prompt, 256 - static_cast<int>(prompt.size())));
    EXPECT(r.status.ok(), "prompt + max_tokens == context: %s", r.status.error_message().c_str());
  }

  // A cancelled stream frees its blocks.
  {
    GenerateRequest req = greedy_request(prompt, 256 - static_cast<int>(prompt.size()));
    req.set_n(16);
    grpc::ClientContext ctx;
    with_key(ctx);
    auto reader = stub->Generate(&ctx, req);
    GenerateResponse m;
    EXPECT(reader->Read(&m), "no first message before cancel");
    ctx.TryCancel();
    while (reader->Read(&m)) {
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) std::fprintf(stderr, "note: the stream finished before the cancel reached it\n");
    else EXPECT(s.error_code() == grpc::StatusCode::CANCELLED, "cancel: code %d", s.error_code());
    // The engine publishes its stats at the end of a step with work; an abort-only step
    // does not, so run one more request to refresh them (a leak would still show).
    EXPECT(generate(*stub, greedy_request(prompt, 1)).status.ok(), "1-token generate after cancel");
    iris::v1::ServerInfo after;
    const auto t1 = std::chrono::steady_clock::now();
    do {
      after = info(*stub);
      if (after.kv_blocks_free() == after.kv_blocks_total() && after.running() == 0 && after.waiting() == 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (std::chrono::steady_clock::now() - t1 < std::chrono::seconds(10));
    EXPECT(after.kv_blocks_free() == after.kv_blocks_total(), "after cancel: %d of %d blocks free",
           after.kv_blocks_free(), after.kv_blocks_total());
    EXPECT(after.running() == 0 && after.waiting() == 0, "after cancel: running %d waiting %d",
           after.running(), after.waiting());
    EXPECT(health(*hstub) == grpc::health::v1::HealthCheckResponse::SERVING, "unhealthy after cancel");
    // And the server still generates correctly.
    StreamResult r = generate(*stub, greedy_request(prompt, kMaxTokens));
    EXPECT(r.status.ok() && r.ids() == expected, "generate after cancel differs");
  }

  // SIGTERM → clean exit 0.
  double secs = 0;
  const int st = server.stop(SIGTERM, std::chrono::seconds(20), &secs);
  EXPECT(st != -1, "server did not exit within 20 s of SIGTERM");
  std::fprintf(stderr, "server exited %.2f s after SIGTERM\n", secs);
  EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "server exit status %d", st);
  // Nothing was in flight: no waiting for the drain deadline (5 s), even with this client's
  // connection still open.
  EXPECT(secs < 2.0, "exit took %.2f s with nothing to drain", secs);

  // Images through Generate on a LLaVA checkpoint: the served tokens equal the reference fed
  // with PIL-preprocessed pixels (tests/vision/image_fixtures.json); bad images fail alone.
  if (argc == 4) {
    const std::string vision = argv[3];
    const nlohmann::json fx = read_json(vision + "/image_fixtures.json");
    for (const auto& c : fx.value("cases", nlohmann::json::array())) {
      const std::string name = c["model"];
      ServerProcess vs;
      vs.start(iris, {"--model", vision + "/" + name, "--num-kv-blocks", "64", "--threads", "2",
                      "--max-num-batched-tokens", "16"});
      auto vch = grpc::CreateCustomChannel(vs.address(), grpc::InsecureChannelCredentials(), quick_reconnect());
      auto vstub = iris::v1::Inference::NewStub(vch);
      auto vhealth = grpc::health::v1::Health::NewStub(vch);
      if (!vs.wait_serving(vch)) continue;
      const auto want = c["output_ids"].get<std::vector<int32_t>>();
      const auto want_lps = c["logprobs"].get<std::vector<float>>();
      GenerateRequest req = greedy_request(c["prompt_ids"].get<std::vector<int32_t>>(),
                                           static_cast<int>(want.size()));
      req.set_logprobs(0);
      req.set_return_prompt_token_ids(true);
      std::vector<std::string> files = c["images"].get<std::vector<std::string>>();
      for (const auto& f : files) {
        std::ifstream in(f, std::ios::binary);
        std::stringstream ss;
        ss << in.rdbuf();
        iris::v1::ImagePart* part = req.add_images();
        part->set_data(ss.str());
        part->set_mime_type(f.size() > 4 && f.substr(f.size() - 4) == ".png" ? "image/png" : "image/jpeg");
      }
      StreamResult r = generate(*vstub, req, /*auth=*/false);
      EXPECT(r.status.ok(), "%s with images: %s", name.c_str(), r.status.error_message().c_str());
      EXPECT(r.ids() == want, "%s: served tokens differ from the reference", name.c_str());
      EXPECT(r.prompt_ids() == c["expanded_prompt_ids"].get<std::vector<int32_t>>(),
             "%s: expanded prompt differs", name.c_str());
      const float worst = max_logprob_diff(r, want_lps);
      EXPECT(worst <= 1e-4f, "%s: logprob max diff %g", name.c_str(), worst);

      struct BadImage {
        const char* what;
        std::function<void(GenerateRequest&)> edit;
        const char* field;
      };
      const std::vector<BadImage> bad_images = {
          {"one image too few", [](GenerateRequest& g) { g.mutable_images()->RemoveLast(); }, "images"},
          {"garbage bytes", [](GenerateRequest& g) { g.mutable_images(0)->set_data("not an image at all"); }, "images[0]"},
          {"truncated PNG", [](GenerateRequest& g) { g.mutable_images(0)->set_data(g.images(0).data().substr(0, 40)); }, "images[0]"},
          {"wrong mime type", [](GenerateRequest& g) { g.mutable_images(1)->set_mime_type("image/gif"); }, "images[1].mime_type"},
          // images[1] is a JPEG: its frame header now claims 65000 x 65000 pixels, which
          // the header probe refuses before any decoding.
          {"decompression bomb", [](GenerateRequest& g) {
             std::string d = g.images(1).data();
             for (size_t i = 0; i + 8 < d.size(); ++i)
               if (static_cast<uint8_t>(d[i]) == 0xFF && (static_cast<uint8_t>(d[i + 1]) == 0xC0 ||
                                                          static_cast<uint8_t>(d[i + 1]) == 0xC2)) {
                 d[i + 5] = d[i + 7] = static_cast<char>(0xFD);
                 d[i + 6] = d[i + 8] = static_cast<char>(0xE8);
                 break;
               }
             g.mutable_images(1)->set_data(d);
           }, "images[1].data"},
      };
      for (const BadImage& b : bad_images) {
        GenerateRequest bad = req;
        b.edit(bad);
        StreamResult br = generate(*vstub, bad, false);
        EXPECT(br.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
                   br.status.error_message().find(b.field) != std::string::npos,
               "%s %s: code %d (%s)", name.c_str(), b.what, br.status.error_code(),
               br.status.error_message().c_str());
      }
      EXPECT(health(*vhealth) == grpc::health::v1::HealthCheckResponse::SERVING, "%s unhealthy", name.c_str());
      StreamResult again = generate(*vstub, req, false);
      EXPECT(again.status.ok() && again.ids() == want, "%s: second request differs", name.c_str());
      if (name == "clip-llava") check_vision_chat(*vstub, vision, iris, vs.address());
      const int st = vs.stop(SIGTERM, std::chrono::seconds(20));
      EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s server exit %d", name.c_str(), st);
    }
  }

  // Tensor parallelism through the server: 2 and 4 CPU ranks (the checkpoint has 2 KV heads,
  // fewer than 4 ranks) stream the same greedy tokens as `iris generate` with one.
  for (const char* tp_size : {"2", "4"}) {
    ServerProcess tp;
    tp.start(iris, {"--model", model, "--tensor-parallel-size", tp_size, "--num-kv-blocks", "64",
                    "--threads", "2"});
    auto tp_channel = grpc::CreateCustomChannel(tp.address(), grpc::InsecureChannelCredentials(),
                                                quick_reconnect());
    auto tp_stub = iris::v1::Inference::NewStub(tp_channel);
    if (tp.wait_serving(tp_channel)) {
      GenerateRequest one = greedy_request(prompt, kMaxTokens);
      one.set_logprobs(0);
      StreamResult r = generate(*tp_stub, one, /*auth=*/false);
      EXPECT(r.status.ok() && r.ids() == expected, "TP=%s server: %s, ids differ: %d", tp_size,
             r.status.error_message().c_str(), r.ids() != expected);
      // Logprobs within 1e-4 of the single-rank `iris generate`.
      size_t k = 0;
      const float worst = max_logprob_diff(r, expected_lps, &k);
      EXPECT(k == expected_lps.size() && worst <= 1e-4f, "TP=%s logprobs: %zu, max diff %g", tp_size,
             k, worst);
      GenerateRequest n3 = greedy_request(prompt, kMaxTokens);
      n3.set_n(3);
      r = generate(*tp_stub, n3, false);
      for (int i = 0; i < 3; ++i)
        EXPECT(r.status.ok() && r.ids(i) == expected, "TP=%s choice %d differs", tp_size, i);
    }
    const int st = tp.stop(SIGTERM, std::chrono::seconds(20));
    EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "TP=%s server exit %d", tp_size, st);
  }

  // A stalled rank brings the server down fast: the request fails with INTERNAL, health
  // stops saying SERVING and the process exits non-zero instead of hanging.
  {
    ServerProcess stall;
    stall.start(iris, {"--model", model, "--tensor-parallel-size", "2", "--tp-timeout", "1",
                       "--num-kv-blocks", "64", "--threads", "2"},
                {"IRIS_FAILPOINT=stall_rank:1:3"});
    auto ch = grpc::CreateCustomChannel(stall.address(), grpc::InsecureChannelCredentials(),
                                        quick_reconnect());
    auto st_stub = iris::v1::Inference::NewStub(ch);
    if (stall.wait_serving(ch)) {
      const auto t0 = std::chrono::steady_clock::now();
      StreamResult r = generate(*st_stub, greedy_request(prompt, kMaxTokens), false);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT(r.status.error_code() == grpc::StatusCode::INTERNAL &&
                 r.status.error_message().find("rank") != std::string::npos,
             "stalled rank: code %d (%s)", r.status.error_code(), r.status.error_message().c_str());
      EXPECT(secs < 10.0, "the failing request took %.1f s", secs);
      int code = -1;
      const auto t1 = std::chrono::steady_clock::now();
      while (std::chrono::steady_clock::now() - t1 < std::chrono::seconds(15)) {
        int status = 0;
        if (waitpid(stall.pid, &status, WNOHANG) == stall.pid) {
          stall.pid = -1;
          code = status;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      EXPECT(code != -1, "the server with a stalled rank did not exit");
      EXPECT(code != -1 && WIFEXITED(code) && WEXITSTATUS(code) == 3, "exit status %d (want 3)", code);
    }
  }

  if (iris_test::g_failures) {
    std::fprintf(stderr, "%d check(s) failed\n", iris_test::g_failures);
    return 1;
  }
  std::fprintf(stderr, "all checks passed\n");
  return 0;
}
