// Integration test of the rest of the `iris serve` API on the embedded model (it has a real
// tokenizer and chat template): Chat (== Generate on the rendered prompt; special-token text in
// a message stays text), Tokenize/Detokenize, ListModels, top logprobs, reflection, request
// caps, message size limit, client deadline, 1,000 streams cancelled mid-way (all KV blocks
// free afterwards), waiting-queue overflow, TLS, the `iris client` and `iris bench serve`
// commands, and drain on SIGTERM with a stream in flight and a connection left open.
//   serve_api_integration_test IRIS_BINARY MODEL_DIR WORK_DIR
#include <google/protobuf/util/json_util.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "reflection.grpc.pb.h"
#include "serve_test_util.h"

namespace {

using iris::v1::ChatRequest;
using iris::v1::GenerateRequest;
using iris::v1::GenerateResponse;
using namespace iris_test;

const char* kKey = "api-test-key";
constexpr int32_t kEotId = 2047;  // <|eot_id|> of iris-tiny

void with_key(grpc::ClientContext& ctx) { ctx.AddMetadata("authorization", std::string("Bearer ") + kKey); }

struct Client {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<iris::v1::Inference::Stub> stub;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;

  explicit Client(std::shared_ptr<grpc::Channel> c)
      : channel(std::move(c)), stub(iris::v1::Inference::NewStub(channel)),
        health(grpc::health::v1::Health::NewStub(channel)) {}

  StreamResult generate(const GenerateRequest& req, int deadline_ms = 60000) {
    return collect(
        req, [&](grpc::ClientContext* ctx, const GenerateRequest& r) { return stub->Generate(ctx, r); },
        [&](grpc::ClientContext& ctx) {
          with_key(ctx);
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
        });
  }
  StreamResult chat(const ChatRequest& req) {
    return collect(
        req, [&](grpc::ClientContext* ctx, const ChatRequest& r) { return stub->Chat(ctx, r); },
        [&](grpc::ClientContext& ctx) { with_key(ctx); });
  }
  iris::v1::ServerInfo info() {
    grpc::ClientContext ctx;
    with_key(ctx);
    iris::v1::ServerInfo resp;
    grpc::Status s = stub->GetServerInfo(&ctx, {}, &resp);
    EXPECT(s.ok(), "GetServerInfo: %s", s.error_message().c_str());
    return resp;
  }
  // Waits until nothing runs or waits and every KV block is free again.
  iris::v1::ServerInfo wait_idle(std::chrono::seconds limit = std::chrono::seconds(20)) {
    iris::v1::ServerInfo after;
    const auto t0 = std::chrono::steady_clock::now();
    do {
      after = info();
      if (after.kv_blocks_free() == after.kv_blocks_total() && after.running() == 0 &&
          after.waiting() == 0 && after.streams() == 0)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    } while (std::chrono::steady_clock::now() - t0 < limit);
    return after;
  }
};

ChatRequest chat_request(const std::vector<std::pair<std::string, std::string>>& messages) {
  ChatRequest r;
  for (const auto& [role, text] : messages) {
    iris::v1::ChatMessage* m = r.add_messages();
    m->set_role(role);
    m->add_content()->set_text(text);
  }
  r.set_temperature(0.0f);
  r.set_max_tokens(24);
  r.set_return_prompt_token_ids(true);
  return r;
}

void expect_status(const char* what, const StreamResult& r, grpc::StatusCode code, const char* field) {
  EXPECT(r.status.error_code() == code, "%s: code %d (%s), want %d", what, r.status.error_code(),
         r.status.error_message().c_str(), code);
  EXPECT(field == nullptr || r.status.error_message().find(field) != std::string::npos,
         "%s: message '%s' does not name %s", what, r.status.error_message().c_str(), field);
  EXPECT(r.messages.empty(), "%s: %zu messages streamed", what, r.messages.size());
}

// A stream driven by the callback API that cancels itself after `cancel_after` token
// messages (0 = right away).
class CancellingStream final : public grpc::ClientReadReactor<GenerateResponse> {
 public:
  CancellingStream(iris::v1::Inference::Stub* stub, const GenerateRequest& req, int cancel_after,
                   std::function<void(const grpc::Status&, int)> done)
      : cancel_after_(cancel_after), done_(std::move(done)) {
    with_key(ctx_);
    ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    stub->async()->Generate(&ctx_, &req, this);
    // The hold keeps OnDone (which deletes this) from running before the constructor ends.
    AddHold();
    StartRead(&msg_);
    StartCall();
    if (cancel_after_ == 0) ctx_.TryCancel();
    RemoveHold();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (msg_.token_ids_size() > 0 && ++tokens_ == cancel_after_) ctx_.TryCancel();
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status& s) override {
    auto done = std::move(done_);
    const int tokens = tokens_;
    const grpc::Status status = s;
    delete this;
    done(status, tokens);
  }

 private:
  grpc::ClientContext ctx_;
  GenerateResponse msg_;
  int cancel_after_;
  int tokens_ = 0;
  std::function<void(const grpc::Status&, int)> done_;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace

// The services grpc.reflection lists (its status: UNIMPLEMENTED when reflection is off).
grpc::Status list_services(const std::shared_ptr<grpc::Channel>& channel, std::vector<std::string>& names) {
  auto rstub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext ctx;
  auto rw = rstub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest req;
  req.set_list_services("");
  rw->Write(req);
  rw->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse resp;
  while (rw->Read(&resp))
    for (const auto& svc : resp.list_services_response().service()) names.push_back(svc.name());
  return rw->Finish();
}

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s IRIS_BINARY MODEL_DIR WORK_DIR\n", argv[0]);
    return 2;
  }
  const std::string iris = argv[1], model = argv[2], work = argv[3];
  std::system(("mkdir -p " + shell_quote(work)).c_str());

  ServerProcess server;
  server.start(iris, {"--model", model, "--api-key", kKey, "--enable-reflection",
                      "--max-message-bytes", "262144", "--max-num-seqs", "16", "--num-kv-blocks",
                      "256", "--threads", "1", "--drain-timeout", "10", "--max-queue", "2000",
                      // The embedded template prints no tools; the syntax is named here.
                      "--tool-call-parser", "hermes"});
  Client c(grpc::CreateCustomChannel(server.address(), grpc::InsecureChannelCredentials(),
                                     quick_reconnect()));
  if (!server.wait_serving(c.channel)) return 1;
  std::fprintf(stderr, "server SERVING on %s\n", server.address().c_str());

  // ListModels and server info.
  const iris::v1::ServerInfo si = c.info();
  EXPECT(si.model_id() == "iris-tiny", "model_id '%s'", si.model_id().c_str());
  EXPECT(si.vocab_size() == 2048, "vocab_size %lld", static_cast<long long>(si.vocab_size()));
  {
    grpc::ClientContext ctx;
    with_key(ctx);
    iris::v1::ListModelsResponse resp;
    grpc::Status s = c.stub->ListModels(&ctx, {}, &resp);
    EXPECT(s.ok() && resp.models_size() == 1, "ListModels: %s, %d models", s.error_message().c_str(),
           resp.models_size());
    if (resp.models_size() == 1) {
      EXPECT(resp.models(0).id() == "iris-tiny" && resp.models(0).has_chat_template() &&
                 resp.models(0).max_context_length() == si.max_context_length(),
             "model card %s", resp.models(0).DebugString().c_str());
    }
    grpc::ClientContext bare;
    s = c.stub->ListModels(&bare, {}, &resp);
    EXPECT(s.error_code() == grpc::StatusCode::UNAUTHENTICATED, "ListModels without key: %d", s.error_code());
  }

  // Tokenize / Detokenize round trip.
  std::vector<int32_t> hello_ids;
  {
    grpc::ClientContext ctx;
    with_key(ctx);
    iris::v1::TokenizeRequest req;
    req.set_text("Hello world, how are you?");
    iris::v1::TokenizeResponse resp;
    grpc::Status s = c.stub->Tokenize(&ctx, req, &resp);
    EXPECT(s.ok() && resp.token_ids_size() > 3, "Tokenize: %s", s.error_message().c_str());
    hello_ids.assign(resp.token_ids().begin(), resp.token_ids().end());

    grpc::ClientContext ctx2;
    with_key(ctx2);
    iris::v1::DetokenizeRequest dreq;
    for (int32_t t : hello_ids) dreq.add_token_ids(t);
    iris::v1::DetokenizeResponse dresp;
    s = c.stub->Detokenize(&ctx2, dreq, &dresp);
    EXPECT(s.ok() && dresp.text() == "Hello world, how are you?", "Detokenize: %s '%s'",
           s.error_message().c_str(), dresp.text().c_str());

    grpc::ClientContext ctx3;
    with_key(ctx3);
    dreq.add_token_ids(5000);
    s = c.stub->Detokenize(&ctx3, dreq, &dresp);
    EXPECT(s.error_code() == grpc::StatusCode::INVALID_ARGUMENT &&
               s.error_message().find("token_ids") != std::string::npos,
           "Detokenize bad id: %d %s", s.error_code(), s.error_message().c_str());
  }

  // Chat: the reply of the embedded model, and equality with Generate on the same prompt ids.
  {
    StreamResult r = c.chat(chat_request({{"user", "Hello"}}));
    EXPECT(r.status.ok(), "Chat: %s", r.status.error_message().c_str());
    EXPECT(r.text() == "Hello! How are you today?", "Chat reply '%s'", r.text().c_str());
    EXPECT(!r.messages.empty() && r.messages.back().finish_reason() == "stop", "finish_reason '%s'",
           r.messages.empty() ? "" : r.messages.back().finish_reason().c_str());
    const std::vector<int32_t> prompt = r.prompt_ids();
    EXPECT(!prompt.empty(), "no prompt ids returned");

    // The prompt equals `iris render-chat` (checked elsewhere against @huggingface/jinja) then
    // Tokenize without added specials (checked against HF's tokenizers).
    std::ofstream(work + "/hello.json") << R"([{"role": "user", "content": "Hello"}])";
    const std::string rendered = run_capture(shell_quote(iris) + " render-chat --model " + shell_quote(model) +
                                             " --messages " + shell_quote(work + "/hello.json") +
                                             " --add-generation-prompt");
    grpc::ClientContext ctx;
    with_key(ctx);
    iris::v1::TokenizeRequest treq;
    treq.set_text(rendered);
    treq.set_add_special_tokens(false);
    iris::v1::TokenizeResponse tresp;
    EXPECT(c.stub->Tokenize(&ctx, treq, &tresp).ok(), "Tokenize rendered");
    EXPECT(std::vector<int32_t>(tresp.token_ids().begin(), tresp.token_ids().end()) == prompt,
           "chat prompt ids differ from render-chat + Tokenize (%d vs %zu ids)", tresp.token_ids_size(),
           prompt.size());

    GenerateRequest g = greedy_request(prompt, 24);
    g.set_ignore_eos(false);
    StreamResult gr = c.generate(g);
    EXPECT(gr.status.ok() && gr.ids() == r.ids(), "Generate on the chat prompt differs from Chat");
    EXPECT(gr.text() == r.text(), "Generate text '%s' vs Chat '%s'", gr.text().c_str(), r.text().c_str());
  }
  // Text that spells a special token stays text inside a message.
  {
    StreamResult plain = c.chat(chat_request({{"user", "Say it"}}));
    StreamResult special = c.chat(chat_request({{"user", "Say <|eot_id|> it"}}));
    EXPECT(plain.status.ok() && special.status.ok(), "chat with special text: %s",
           special.status.error_message().c_str());
    auto count = [](const std::vector<int32_t>& v, int32_t id) {
      return static_cast<int>(std::count(v.begin(), v.end(), id));
    };
    const auto p_ids = plain.prompt_ids(), s_ids = special.prompt_ids();
    EXPECT(count(p_ids, kEotId) == 1 && count(s_ids, kEotId) == 1,
           "<|eot_id|> tokens in the prompt: %d (plain) %d (with the text in the message)",
           count(p_ids, kEotId), count(s_ids, kEotId));
    EXPECT(s_ids.size() > p_ids.size() + 2, "the special-token text was not tokenized as text (%zu vs %zu)",
           s_ids.size(), p_ids.size());
    // Through Generate's raw text the same spelling IS the special token (HF encode).
    GenerateRequest g;
    g.set_text("Say <|eot_id|> it");
    g.set_max_tokens(1);
    g.set_return_prompt_token_ids(true);
    StreamResult gr = c.generate(g);
    EXPECT(gr.status.ok() && count(gr.prompt_ids(), kEotId) == 1, "Generate text special parsing");
  }
  // Structured output over gRPC: a regex and a choice hold at temperature 1; a bad regex is
  // INVALID_ARGUMENT naming the field.
  {
    GenerateRequest g;
    g.set_text("Code:");
    g.set_max_tokens(20);
    g.set_temperature(1.0f);
    g.set_seed(3);
    g.mutable_structured_output()->set_regex("[a-z]{3}-[0-9]{2}");
    StreamResult r = c.generate(g);
    const std::string text = r.text();
    const bool shape = text.size() == 6 && text[3] == '-' && std::islower(static_cast<unsigned char>(text[0])) &&
                       std::islower(static_cast<unsigned char>(text[1])) &&
                       std::islower(static_cast<unsigned char>(text[2])) &&
                       std::isdigit(static_cast<unsigned char>(text[4])) &&
                       std::isdigit(static_cast<unsigned char>(text[5]));
    EXPECT(r.status.ok() && shape, "regex-constrained output '%s' (%s)", text.c_str(),
           r.status.error_message().c_str());
    GenerateRequest ch = g;
    ch.mutable_structured_output()->mutable_choice()->add_choices("red");
    ch.mutable_structured_output()->mutable_choice()->add_choices("green");
    StreamResult rc = c.generate(ch);
    EXPECT(rc.status.ok() && (rc.text() == "red" || rc.text() == "green"), "choice output '%s'",
           rc.text().c_str());
    GenerateRequest bad = g;
    bad.mutable_structured_output()->set_regex("(a");
    expect_status("bad regex", c.generate(bad), grpc::StatusCode::INVALID_ARGUMENT, "structured_output.regex");
  }

  // Tool calling over gRPC: a named function at temperature 1 streams a call (id, name, then
  // argument pieces) whose arguments satisfy the schema; auto reads a call out of the text; a
  // history with tool_calls is accepted; bad tools are INVALID_ARGUMENT naming the field.
  {
    auto tool_request = [](const char* user) {
      ChatRequest r = chat_request({{"user", user}});
      r.set_return_prompt_token_ids(false);
      iris::v1::Tool* add = r.add_tools();
      add->set_name("add");
      add->set_description("Adds two digits");
      add->set_parameters_json(R"({"type": "object", "properties": {"a": {"type": "integer", "minimum": 0,
          "maximum": 9}, "b": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["a", "b"],
          "additionalProperties": false})");
      r.add_tools()->set_name("now");
      return r;
    };
    struct Call {
      std::string id, name, arguments;
    };
    auto calls_of = [](const StreamResult& r, std::string& finish) {
      std::vector<Call> calls;
      for (const auto& m : r.messages) {
        for (const auto& d : m.tool_calls()) {
          if (d.index() == static_cast<int>(calls.size())) {
            EXPECT(!d.id().empty() && !d.name().empty(), "a call's first piece carries id and name");
            calls.push_back({d.id(), d.name(), ""});
          }
          EXPECT(d.index() < static_cast<int>(calls.size()), "piece for call %d before it started", d.index());
          if (d.index() < static_cast<int>(calls.size())) calls[d.index()].arguments += d.arguments();
        }
        if (!m.finish_reason().empty()) finish = m.finish_reason();
      }
      return calls;
    };
    for (uint64_t seed : {1, 2, 3}) {
      ChatRequest r = tool_request("Add two numbers");
      r.set_temperature(1.0f);
      r.set_seed(seed);
      r.set_max_tokens(200);
      r.mutable_tool_choice()->set_function_name("add");
      StreamResult res = c.chat(r);
      std::string finish;
      const std::vector<Call> calls = calls_of(res, finish);
      EXPECT(res.status.ok() && finish == "tool_calls" && calls.size() == 1, "named call: %s, finish '%s', %zu calls",
             res.status.error_message().c_str(), finish.c_str(), calls.size());
      EXPECT(res.text().empty(), "content beside a forced call: '%s'", res.text().c_str());
      if (calls.size() != 1) continue;
      EXPECT(calls[0].name == "add" && calls[0].id.rfind("call_", 0) == 0, "call %s %s", calls[0].id.c_str(),
             calls[0].name.c_str());
      nlohmann::json args;
      try {
        args = nlohmann::json::parse(calls[0].arguments);
      } catch (const std::exception& e) {
        EXPECT(false, "arguments '%s' are not JSON: %s", calls[0].arguments.c_str(), e.what());
        continue;
      }
      EXPECT(args.is_object() && args.size() == 2 && args["a"].is_number_integer() && args["b"].is_number_integer() &&
                 args["a"].get<int>() >= 0 && args["a"].get<int>() <= 9 && args["b"].get<int>() >= 0 &&
                 args["b"].get<int>() <= 9,
             "arguments %s do not satisfy the schema", calls[0].arguments.c_str());
    }
    {
      ChatRequest r = tool_request("Call add");
      r.mutable_tool_choice()->set_mode("auto");
      r.set_max_tokens(100);
      r.mutable_structured_output()->mutable_choice()->add_choices(
          "Sure. <tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1, \"b\": 2}}\n</tool_call>");
      StreamResult res = c.chat(r);
      std::string finish;
      const std::vector<Call> calls = calls_of(res, finish);
      EXPECT(res.status.ok() && finish == "tool_calls" && calls.size() == 1 && calls[0].name == "add" &&
                 nlohmann::json::parse(calls[0].arguments) == nlohmann::json({{"a", 1}, {"b", 2}}) &&
                 res.text() == "Sure. ",
             "auto call: %s finish '%s' text '%s'", res.status.error_message().c_str(), finish.c_str(),
             res.text().c_str());
    }
    {
      ChatRequest r = tool_request("Add 1 and 2");
      iris::v1::ChatMessage* a = r.add_messages();
      a->set_role("assistant");
      iris::v1::ToolCall* tc = a->add_tool_calls();
      tc->set_id("call_1");
      tc->set_name("add");
      tc->set_arguments(R"({"a": 1, "b": 2})");
      iris::v1::ChatMessage* t = r.add_messages();
      t->set_role("tool");
      t->set_tool_call_id("call_1");
      t->add_content()->set_text("3");
      r.set_max_tokens(2);
      StreamResult ok = c.chat(r);
      EXPECT(ok.status.ok(), "history with tool calls: %s", ok.status.error_message().c_str());
      a->mutable_tool_calls(0)->set_arguments("{\"a\": ");
      expect_status("bad history arguments", c.chat(r), grpc::StatusCode::INVALID_ARGUMENT,
                    "messages[1].tool_calls[0].function.arguments");
    }
    ChatRequest unknown = tool_request("x");
    unknown.mutable_tool_choice()->set_function_name("sub");
    expect_status("unknown function", c.chat(unknown), grpc::StatusCode::INVALID_ARGUMENT,
                  "tool_choice.function.name");
    ChatRequest bad_schema = tool_request("x");
    bad_schema.mutable_tools(0)->set_parameters_json("{not json");
    expect_status("bad parameters_json", c.chat(bad_schema), grpc::StatusCode::INVALID_ARGUMENT,
                  "tools[0].parameters_json");
  }

  // Top logprobs: for greedy decoding the best alternative is the chosen token.
  {
    GenerateRequest g = greedy_request(hello_ids, 6);
    g.set_logprobs(3);
    StreamResult r = c.generate(g);
    EXPECT(r.status.ok(), "logprobs 3: %s", r.status.error_message().c_str());
    int checked = 0;
    for (const auto& m : r.messages) {
      if (m.token_ids_size() == 0) continue;
      EXPECT(m.top_logprobs_size() == 1 && m.top_logprobs(0).token_ids_size() == 3, "top_logprobs shape");
      if (m.top_logprobs_size() != 1 || m.top_logprobs(0).token_ids_size() != 3) continue;
      const auto& t = m.top_logprobs(0);
      EXPECT(t.token_ids(0) == m.token_ids(0) && std::abs(t.logprobs(0) - m.logprobs(0)) < 1e-6,
             "best alternative %d (%f) vs sampled %d (%f)", t.token_ids(0), t.logprobs(0),
             m.token_ids(0), m.logprobs(0));
      EXPECT(t.logprobs(0) >= t.logprobs(1) && t.logprobs(1) >= t.logprobs(2), "not sorted");
      ++checked;
    }
    EXPECT(checked == 6, "%d tokens with top logprobs", checked);
  }

  // Bad chat and generate inputs fail alone with the field named.
  {
    ChatRequest none = chat_request({});
    expect_status("chat no messages", c.chat(none), grpc::StatusCode::INVALID_ARGUMENT, "messages");
    expect_status("chat unknown role", c.chat(chat_request({{"wizard", "hi"}})),
                  grpc::StatusCode::INVALID_ARGUMENT, "role");
    ChatRequest img = chat_request({{"user", "what is this?"}});
    iris::v1::ImagePart* part = img.mutable_messages(0)->add_content()->mutable_image();
    part->set_data("\x89PNG\r\n\x1a\n");
    part->set_mime_type("image/png");
    expect_status("chat image to a text model", c.chat(img), grpc::StatusCode::INVALID_ARGUMENT, "image");
    ChatRequest empty_part = chat_request({{"user", "hi"}});
    empty_part.mutable_messages(0)->add_content();
    expect_status("chat empty part", c.chat(empty_part), grpc::StatusCode::INVALID_ARGUMENT, "content");
    ChatRequest wrong_model = chat_request({{"user", "hi"}});
    wrong_model.set_model("gpt-17");
    expect_status("chat unknown model", c.chat(wrong_model), grpc::StatusCode::NOT_FOUND, "model");

    GenerateRequest many_stops = greedy_request(hello_ids, 4);
    for (int i = 0; i < 17; ++i) many_stops.add_stop("s" + std::to_string(i));
    expect_status("17 stop strings", c.generate(many_stops), grpc::StatusCode::INVALID_ARGUMENT, "stop");
    GenerateRequest long_stop = greedy_request(hello_ids, 4);
    long_stop.add_stop(std::string(300, 'x'));
    expect_status("300-byte stop string", c.generate(long_stop), grpc::StatusCode::INVALID_ARGUMENT, "stop");
    GenerateRequest lp = greedy_request(hello_ids, 4);
    lp.set_logprobs(21);
    expect_status("logprobs 21", c.generate(lp), grpc::StatusCode::INVALID_ARGUMENT, "logprobs");
    GenerateRequest too_long = greedy_request(std::vector<int32_t>(600, 100), 4);
    expect_status("prompt beyond the context", c.generate(too_long), grpc::StatusCode::INVALID_ARGUMENT,
                  "prompt");
    GenerateRequest huge;
    huge.set_text(std::string(300000, 'a'));
    expect_status("message over --max-message-bytes", c.generate(huge), grpc::StatusCode::RESOURCE_EXHAUSTED,
                  nullptr);
    EXPECT(health(*c.health) == grpc::health::v1::HealthCheckResponse::SERVING, "unhealthy after bad inputs");
  }

  // Reflection lists the services.
  {
    std::vector<std::string> names;
    const grpc::Status s = list_services(c.channel, names);
    auto has = [&](const char* n) { return std::find(names.begin(), names.end(), n) != names.end(); };
    EXPECT(s.ok() && has("iris.v1.Inference") && has("grpc.health.v1.Health"),
           "reflection: %s, %zu services", s.error_message().c_str(), names.size());
  }

  // A client deadline ends the request and frees its blocks.
  {
    GenerateRequest g = greedy_request(hello_ids, 480);
    g.set_n(8);
    StreamResult r = c.generate(g, /*deadline_ms=*/150);
    EXPECT(r.status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED, "deadline: code %d (%s)",
           r.status.error_code(), r.status.error_message().c_str());
    const iris::v1::ServerInfo after = c.wait_idle();
    EXPECT(after.kv_blocks_free() == after.kv_blocks_total() && after.running() == 0 && after.waiting() == 0,
           "after deadline: %d of %d blocks free, running %d waiting %d", after.kv_blocks_free(),
           after.kv_blocks_total(), after.running(), after.waiting());
  }

  // 1,000 streams, cancelled mid-way (a quarter before any token, the rest after 1-4 tokens).
  {
    const int kStreams = 1000;
    std::mutex mu;
    std::condition_variable cv;
    int done = 0, cancelled = 0, other = 0, with_tokens = 0;
    std::vector<GenerateRequest> reqs(kStreams);
    for (int i = 0; i < kStreams; ++i) {
      std::vector<int32_t> p = hello_ids;
      p.push_back(static_cast<int32_t>(10 + i % 1000));
      reqs[i] = greedy_request(p, 400);
      new CancellingStream(c.stub.get(), reqs[i], i % 4 == 0 ? 0 : 1 + i % 4,
                           [&](const grpc::Status& s, int tokens) {
                             std::lock_guard<std::mutex> lock(mu);
                             ++done;
                             if (s.error_code() == grpc::StatusCode::CANCELLED) ++cancelled;
                             else ++other;
                             if (tokens > 0) ++with_tokens;
                             cv.notify_all();
                           });
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::seconds(180), [&] { return done == kStreams; });
    }
    EXPECT(done == kStreams, "%d of %d streams ended", done, kStreams);
    EXPECT(cancelled == kStreams, "%d cancelled, %d ended otherwise", cancelled, other);
    std::fprintf(stderr, "1000 streams: %d received tokens before their cancel\n", with_tokens);
    EXPECT(with_tokens >= kStreams / 2, "only %d streams got tokens before the cancel", with_tokens);
    const iris::v1::ServerInfo after = c.wait_idle(std::chrono::seconds(60));
    EXPECT(after.kv_blocks_free() == after.kv_blocks_total(), "after 1000 cancels: %d of %d blocks free",
           after.kv_blocks_free(), after.kv_blocks_total());
    EXPECT(after.running() == 0 && after.waiting() == 0 && after.streams() == 0,
           "after 1000 cancels: running %d waiting %d streams %d", after.running(), after.waiting(),
           after.streams());
    StreamResult r = c.chat(chat_request({{"user", "Hello"}}));
    EXPECT(r.status.ok() && r.text() == "Hello! How are you today?", "chat after the cancels: '%s'",
           r.text().c_str());
  }

  // The client commands against this server.
  {
    const std::string env = "IRIS_API_KEY=" + std::string(kKey) + " ";
    int st = 0;
    const std::string out = run_capture(env + shell_quote(iris) + " client chat --address " + server.address() +
                                            " --temperature 0 Hello 2>/dev/null",
                                        &st);
    EXPECT(st == 0 && out.find("Hello! How are you today?") != std::string::npos, "iris client chat: '%s'",
           out.c_str());
    const std::string gen = run_capture(env + shell_quote(iris) + " client generate --address " +
                                            server.address() + " --max-tokens 5 --temperature 0 --json " +
                                            shell_quote("Once upon a time") + " 2>/dev/null",
                                        &st);
    EXPECT(st == 0 && gen.find("\"finishReason\":\"length\"") != std::string::npos, "iris client generate: '%s'",
           gen.c_str());
    const std::string json_path = work + "/bench.json";
    const std::string bench = run_capture(env + shell_quote(iris) + " bench serve --address " + server.address() +
                                              " --num-prompts 12 --input-len 16 --output-len 8 --request-rate 50 "
                                              "--max-concurrency 4 --json " + shell_quote(json_path) + " 2>&1",
                                          &st);
    EXPECT(st == 0 && bench.find("Successful requests:") != std::string::npos, "iris bench serve: %s",
           bench.c_str());
    try {
      std::ifstream in(json_path);
      const nlohmann::json j = nlohmann::json::parse(in);
      EXPECT(j.at("completed").get<int>() == 12 && j.at("failed").get<int>() == 0 &&
                 j.at("total_output_tokens").get<int>() == 12 * 8 && j.at("ttft").at("count").get<int>() == 12 &&
                 j.at("itl").at("count").get<int>() == 12 * 7 && j.at("tpot").at("mean_ms").get<double>() > 0,
             "bench JSON %s", j.dump().c_str());
    } catch (const std::exception& e) {
      EXPECT(false, "bench JSON unreadable: %s", e.what());
    }
  }

  // Waiting-queue overflow: one slot, one waiting place.
  {
    ServerProcess small;
    small.start(iris, {"--model", model, "--api-key", kKey, "--max-num-seqs", "1", "--max-queue", "1",
                       "--num-kv-blocks", "128", "--threads", "1"});
    Client q(grpc::CreateCustomChannel(small.address(), grpc::InsecureChannelCredentials(), quick_reconnect()));
    if (small.wait_serving(q.channel)) {
      // Reflection is off unless --enable-reflection (this server has no flag).
      {
        std::vector<std::string> names;
        const grpc::Status s = list_services(q.channel, names);
        EXPECT(s.error_code() == grpc::StatusCode::UNIMPLEMENTED,
               "reflection without --enable-reflection: code %d", s.error_code());
      }
      // The first request runs (~0.3 s), the second waits, the third must be refused. On a
      // loaded machine the first may end before the third arrives, which makes room
      // legitimately; so try a few times. A refusal can only come from a full queue.
      bool refused = false;
      for (int attempt = 0; attempt < 4 && !refused; ++attempt) {
        GenerateRequest g = greedy_request(hello_ids, 500);
        grpc::ClientContext c1, c2;
        with_key(c1);
        with_key(c2);
        auto r1 = q.stub->Generate(&c1, g);
        GenerateResponse m;
        EXPECT(r1->Read(&m), "first stream produced nothing");
        auto r2 = q.stub->Generate(&c2, g);
        const auto t0 = std::chrono::steady_clock::now();
        while (q.info().waiting() < 1 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)) {
        }
        StreamResult third = q.generate(greedy_request(hello_ids, 4));
        if (!third.status.ok()) {
          expect_status("queue overflow", third, grpc::StatusCode::RESOURCE_EXHAUSTED, "queue");
          refused = true;
        } else {
          std::fprintf(stderr, "queue overflow attempt %d: the first request ended too soon\n", attempt);
        }
        c1.TryCancel();
        c2.TryCancel();
        while (r1->Read(&m)) {
        }
        while (r2->Read(&m)) {
        }
        r1->Finish();
        r2->Finish();
      }
      EXPECT(refused, "the third request was never refused with a full queue");
      const iris::v1::ServerInfo after = q.wait_idle();
      EXPECT(after.kv_blocks_free() == after.kv_blocks_total(), "queue server: blocks not freed");
      StreamResult ok = q.generate(greedy_request(hello_ids, 4));
      EXPECT(ok.status.ok(), "after the overflow: %s", ok.status.error_message().c_str());
    }
    const int st = small.stop(SIGTERM, std::chrono::seconds(20));
    EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "queue server exit %d", st);
  }

  // TLS: a self-signed certificate for 127.0.0.1.
  {
    const std::string cert = work + "/cert.pem", key = work + "/key.pem";
    int st = 0;
    run_capture("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost -addext "
                "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " + shell_quote(key) + " -out " +
                    shell_quote(cert) + " 2>&1",
                &st);
    EXPECT(st == 0, "openssl could not make a certificate");
    ServerProcess tls;
    tls.start(iris, {"--model", model, "--tls-cert", cert, "--tls-key", key, "--threads", "1",
                     "--num-kv-blocks", "64"});
    std::ifstream in(cert);
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    Client t(grpc::CreateCustomChannel(tls.address(), grpc::SslCredentials(ssl), quick_reconnect()));
    if (tls.wait_serving(t.channel)) {
      StreamResult r = t.chat(chat_request({{"user", "Hello"}}));
      EXPECT(r.status.ok() && r.text() == "Hello! How are you today?", "chat over TLS: %s '%s'",
             r.status.error_message().c_str(), r.text().c_str());
      Client plain(grpc::CreateChannel(tls.address(), grpc::InsecureChannelCredentials()));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
      iris::v1::ListModelsResponse resp;
      grpc::Status s = plain.stub->ListModels(&ctx, {}, &resp);
      EXPECT(!s.ok(), "a plaintext client was served by the TLS port");
      const std::string out = run_capture(shell_quote(iris) + " client chat --address " + tls.address() +
                                              " --tls-ca " + shell_quote(cert) + " --temperature 0 Hello 2>/dev/null",
                                          &st);
      EXPECT(st == 0 && out.find("Hello! How are you today?") != std::string::npos,
             "iris client chat --tls-ca: '%s'", out.c_str());
    }
    const int code = tls.stop(SIGTERM, std::chrono::seconds(20));
    EXPECT(code != -1 && WIFEXITED(code) && WEXITSTATUS(code) == 0, "TLS server exit %d", code);
  }

  // Drain: SIGTERM with a stream in flight and the channel left open. Health turns
  // NOT_SERVING, new streams are refused with UNAVAILABLE, the stream runs to its end, and the
  // process exits 0 soon after (not at the 10 s deadline).
  {
    GenerateRequest g = greedy_request(hello_ids, 400);
    g.set_n(8);
    grpc::ClientContext ctx;
    with_key(ctx);
    auto reader = c.stub->Generate(&ctx, g);
    GenerateResponse m;
    std::vector<int> per_choice(8, 0);
    EXPECT(reader->Read(&m), "drain: no first message");
    per_choice[m.index()] += m.token_ids_size();
    kill(server.pid, SIGTERM);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT(health(*c.health) == grpc::health::v1::HealthCheckResponse::NOT_SERVING,
           "health while draining: %d", health(*c.health));
    StreamResult refused = c.generate(greedy_request(hello_ids, 4), 3000);
    EXPECT(refused.status.error_code() == grpc::StatusCode::UNAVAILABLE, "call during drain: code %d (%s)",
           refused.status.error_code(), refused.status.error_message().c_str());
    while (reader->Read(&m)) per_choice[m.index()] += m.token_ids_size();
    grpc::Status s = reader->Finish();
    EXPECT(s.ok(), "in-flight stream during drain: %d %s", s.error_code(), s.error_message().c_str());
    for (int i = 0; i < 8; ++i) EXPECT(per_choice[i] == 400, "choice %d got %d tokens", i, per_choice[i]);
    double secs = 0;
    const int st = server.stop(0, std::chrono::seconds(30), &secs);  // signal 0: just wait
    EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "drained server exit %d", st);
    EXPECT(secs < 5.0, "exit took %.2f s after the last stream ended (drain deadline 10 s)", secs);
  }

  if (iris_test::g_failures) {
    std::fprintf(stderr, "%d check(s) failed\n", iris_test::g_failures);
    return 1;
  }
  std::fprintf(stderr, "all checks passed\n");
  return 0;
}
