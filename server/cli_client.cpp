// `iris client generate|chat|info`: a terminal client for a running `iris serve`. Generated
// text streams to stdout as it arrives; finish reason and usage go to stderr. `chat` without
// a message reads user turns from stdin, one per line, and keeps the conversation.
#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <sstream>
#include <optional>
#include <string>
#include <vector>

#include "engine/core/check.h"
#include "iris/v1/inference.grpc.pb.h"
#include "server/cli.h"
#include "server/client_common.h"

namespace iris::cli {
namespace {

struct SamplingFlags {
  std::optional<int> max_tokens, top_k, n, logprobs;
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;

  void add_to(CLI::App& app) {
    app.add_option("--max-tokens", max_tokens, "tokens to generate at most");
    app.add_option("--temperature", temperature, "0 = greedy");
    app.add_option("--top-p", top_p);
    app.add_option("--top-k", top_k);
    app.add_option("--min-p", min_p);
    app.add_option("--repetition-penalty", repetition_penalty);
    app.add_option("--seed", seed);
    app.add_option("--stop", stop, "stop string (repeatable)");
    app.add_option("--n", n, "choices");
    app.add_option("--logprobs", logprobs, "return logprobs (N > 0: and the N most likely tokens)");
    app.add_flag("--ignore-eos", ignore_eos);
  }

  template <class Req>
  void apply(Req& r) const {
    if (max_tokens) r.set_max_tokens(*max_tokens);
    if (temperature) r.set_temperature(*temperature);
    if (top_p) r.set_top_p(*top_p);
    if (top_k) r.set_top_k(*top_k);
    if (min_p) r.set_min_p(*min_p);
    if (repetition_penalty) r.set_repetition_penalty(*repetition_penalty);
    if (seed) r.set_seed(*seed);
    for (const auto& s : stop) r.add_stop(s);
    if (n) r.set_n(*n);
    if (logprobs) r.set_logprobs(*logprobs);
    r.set_ignore_eos(ignore_eos);
  }
};

struct ClientCommandOptions {
  ClientOptions client;
  SamplingFlags sampling;
  std::string model;
  std::string prompt, prompt_ids, message, system;
  std::vector<std::string> images;  // chat: image files sent with the (first) user message
  std::vector<std::string> video_frames;  // chat: one video's frame files, after the images
  double video_fps = 2.0;
  std::string video_file;  // chat: one video file, after the images
  bool json = false;
  double timeout = 600;
};

std::vector<int32_t> parse_id_list(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find(',', pos);
    if (end == std::string::npos) end = s.size();
    const std::string item = s.substr(pos, end - pos);
    try {
      ids.push_back(static_cast<int32_t>(std::stol(item)));
    } catch (const std::exception&) {
      fail("--prompt-ids: '", item, "' is not an integer");
    }
    pos = end + 1;
  }
  return ids;
}

// Streams one Generate/Chat call. Text goes to stdout as it arrives (choice 0 only when
// n > 1, the others are summarised); returns choice 0's text.
template <class Call>
std::string stream_call(const ClientCommandOptions& o, Call start) {
  grpc::ClientContext ctx;
  o.client.authorize(ctx);
  ctx.set_deadline(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(o.timeout * 1e3)));
  auto reader = start(ctx);
  iris::v1::GenerateResponse m;
  std::string text0;
  std::vector<std::string> reasons;
  int prompt_tokens = 0, completion_tokens = 0;
  while (reader->Read(&m)) {
    if (o.json) {
      std::string line;
      google::protobuf::util::JsonPrintOptions jo;
      (void)google::protobuf::util::MessageToJsonString(m, &line, jo);
      std::cout << line << "\n" << std::flush;
    } else if (m.index() == 0) {
      if (!m.text().empty()) {
        std::cout << m.text() << std::flush;
      } else if (m.text().empty() && !m.token_ids().empty() && m.finish_reason().empty()) {
        for (int32_t t : m.token_ids()) std::cout << t << " " << std::flush;
      }
    }
    if (m.index() == 0) text0 += m.text();
    if (!m.finish_reason().empty()) {
      reasons.push_back(std::to_string(m.index()) + ":" + m.finish_reason());
      prompt_tokens = m.usage().prompt_tokens();
      completion_tokens += m.usage().completion_tokens();
    }
  }
  const grpc::Status s = reader->Finish();
  if (!o.json) std::cout << "\n" << std::flush;
  if (!s.ok())
    fail("the server answered ", static_cast<int>(s.error_code()), " (",
         s.error_message().empty() ? "no message" : s.error_message(), ")");
  if (!o.json) {
    std::cerr << "finish_reason=";
    for (size_t i = 0; i < reasons.size(); ++i) std::cerr << (i ? "," : "") << reasons[i];
    std::cerr << " prompt_tokens=" << prompt_tokens << " completion_tokens=" << completion_tokens
              << "\n";
  }
  return text0;
}

int run_client_generate(const ClientCommandOptions& o) {
  auto stub = iris::v1::Inference::NewStub(o.client.channel());
  iris::v1::GenerateRequest req;
  req.set_model(o.model);
  if (!o.prompt_ids.empty()) {
    for (int32_t t : parse_id_list(o.prompt_ids)) req.mutable_token_ids()->add_ids(t);
  } else {
    req.set_text(o.prompt);
  }
  o.sampling.apply(req);
  stream_call(o, [&](grpc::ClientContext& ctx) { return stub->Generate(&ctx, req); });
  return 0;
}

int run_client_chat(const ClientCommandOptions& o) {
  auto stub = iris::v1::Inference::NewStub(o.client.channel());
  iris::v1::ChatRequest base;
  base.set_model(o.model);
  o.sampling.apply(base);
  auto add = [](iris::v1::ChatRequest& r, const std::string& role, const std::string& text) {
    iris::v1::ChatMessage* m = r.add_messages();
    m->set_role(role);
    m->add_content()->set_text(text);
  };
  if (!o.system.empty()) add(base, "system", o.system);
  // Images go first in the user message, as image parts.
  auto read_part = [](const std::string& flag, const std::string& path, iris::v1::ImagePart* img) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(flag, " ", path, ": cannot open");
    std::stringstream ss;
    ss << in.rdbuf();
    img->set_data(ss.str());
    const bool png = path.size() > 4 && path.compare(path.size() - 4, 4, ".png") == 0;
    img->set_mime_type(png ? "image/png" : "image/jpeg");
  };
  auto attach = [&](iris::v1::ChatRequest& r) {
    if (o.images.empty() && o.video_frames.empty() && o.video_file.empty()) return;
    iris::v1::ChatMessage* m = r.mutable_messages(r.messages_size() - 1);
    iris::v1::ChatMessage with_images;
    with_images.set_role(m->role());
    for (const std::string& path : o.images)
      read_part("--image", path, with_images.add_content()->mutable_image());
    if (!o.video_frames.empty()) {
      iris::v1::VideoPart* video = with_images.add_content()->mutable_video();
      video->set_fps(o.video_fps);
      for (const std::string& path : o.video_frames) read_part("--video-frame", path, video->add_frames());
    }
    if (!o.video_file.empty()) {
      std::ifstream in(o.video_file, std::ios::binary);
      if (!in) fail("--video ", o.video_file, ": cannot open");
      std::ostringstream ss;
      ss << in.rdbuf();
      with_images.add_content()->mutable_video()->set_file(ss.str());
    }
    for (const auto& part : m->content()) *with_images.add_content() = part;
    *m = std::move(with_images);
  };
  if (!o.message.empty()) {
    iris::v1::ChatRequest req = base;
    add(req, "user", o.message);
    attach(req);
    stream_call(o, [&](grpc::ClientContext& ctx) { return stub->Chat(&ctx, req); });
    return 0;
  }
  // Interactive: one user turn per line of stdin; the conversation accumulates (images go
  // with the first turn).
  iris::v1::ChatRequest convo = base;
  std::string line;
  bool first = true;
  while (true) {
    std::cerr << "> " << std::flush;
    if (!std::getline(std::cin, line)) break;
    if (line.empty()) continue;
    iris::v1::ChatRequest req = convo;
    add(req, "user", line);
    if (first) attach(req);
    first = false;
    const std::string reply =
        stream_call(o, [&](grpc::ClientContext& ctx) { return stub->Chat(&ctx, req); });
    convo = req;
    add(convo, "assistant", reply);
  }
  return 0;
}

int run_client_info(const ClientCommandOptions& o) {
  auto stub = iris::v1::Inference::NewStub(o.client.channel());
  auto print = [](const google::protobuf::Message& m) {
    std::string s;
    google::protobuf::util::JsonPrintOptions jo;
    jo.add_whitespace = true;
    jo.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(m, &s, jo);
    std::cout << s;
  };
  {
    grpc::ClientContext ctx;
    o.client.authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    iris::v1::ServerInfo info;
    const grpc::Status s = stub->GetServerInfo(&ctx, {}, &info);
    if (!s.ok()) fail("GetServerInfo: ", s.error_message());
    print(info);
  }
  {
    grpc::ClientContext ctx;
    o.client.authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    iris::v1::ListModelsResponse models;
    const grpc::Status s = stub->ListModels(&ctx, {}, &models);
    if (!s.ok()) fail("ListModels: ", s.error_message());
    print(models);
  }
  return 0;
}

}  // namespace

Command add_client(CLI::App& app) {
  auto opts = std::make_shared<ClientCommandOptions>();
  CLI::App* client = app.add_subcommand("client", "Talk to a running iris serve");
  client->require_subcommand(1);
  auto common = [&](CLI::App* sub) {
    opts->client.add_to(*sub);
    sub->add_option("--model", opts->model, "model name (default: the served one)");
    sub->add_option("--timeout", opts->timeout, "seconds before the call is abandoned")
        ->capture_default_str();
  };
  CLI::App* gen = client->add_subcommand("generate", "Stream a completion of a prompt");
  common(gen);
  auto* prompt = gen->add_option("prompt", opts->prompt, "prompt text");
  auto* ids = gen->add_option("--prompt-ids", opts->prompt_ids, "prompt token ids, comma-separated");
  prompt->excludes(ids);
  opts->sampling.add_to(*gen);
  gen->add_flag("--json", opts->json, "print each response message as a JSON line");

  CLI::App* chat = client->add_subcommand(
      "chat", "Chat with the model (one message, or one user turn per line of stdin)");
  common(chat);
  chat->add_option("message", opts->message, "the user message (omit for an interactive chat)");
  chat->add_option("--system", opts->system, "system prompt");
  chat->add_option("--image", opts->images,
                   "image file (JPEG/PNG; repeat the flag for more) sent with the user message "
                   "(vision models)")
      ->allow_extra_args(false);  // one file per flag: the message stays positional
  chat->add_option("--video-frame", opts->video_frames,
                   "a frame (JPEG/PNG) of one video sent after the images, in order (repeat the "
                   "flag per frame; Qwen2.5-VL)")
      ->allow_extra_args(false);
  chat->add_option("--video", opts->video_file,
                   "a video file (MP4, WebM/Matroska, AVI) sent after the images and frames");
  chat->add_option("--video-fps", opts->video_fps, "frames per second of --video-frame")
      ->capture_default_str();
  opts->sampling.add_to(*chat);
  chat->add_flag("--json", opts->json, "print each response message as a JSON line");

  CLI::App* info = client->add_subcommand("info", "Print the server's info and models as JSON");
  common(info);

  return {client, [opts, gen, chat, info, prompt, ids]() {
            if (gen->parsed()) {
              if (prompt->count() == 0 && ids->count() == 0)
                fail("client generate: give a prompt or --prompt-ids");
              return run_client_generate(*opts);
            }
            if (chat->parsed()) return run_client_chat(*opts);
            if (info->parsed()) return run_client_info(*opts);
            return 1;
          }};
}

}  // namespace iris::cli
