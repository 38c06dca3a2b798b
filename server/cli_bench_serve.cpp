// `iris bench serve`: a load generator against a running `iris serve`, reporting what the
// field reports (as `vllm bench serve` does): time to first token, time per output token,
// inter-token latency and end-to-end latency (mean, median, p90, p99), request and token
// throughput. Prompts are random token ids of a set length, or texts from a file; requests
// arrive as a Poisson process at --request-rate (or all at once), at most
// --max-concurrency in flight. Figures only: it never fails on a timing.
// `--backend openai --base-url http://HOST:PORT` drives any OpenAI-compatible server's
// /v1/completions (streamed, usage included) instead, so the same tool measures Iris's HTTP
// API, its gRPC API and other servers side by side.
#include <google/protobuf/util/json_util.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/core/check.h"
#include "iris/v1/inference.grpc.pb.h"
#include "server/cli.h"
#include "server/client_common.h"

namespace iris::cli {
namespace {

using clock_type = std::chrono::steady_clock;

struct ServeBenchOptions {
  ClientOptions client;
  std::string model;
  int num_prompts = 100;
  int input_len = 128;
  int output_len = 128;
  double request_rate = std::numeric_limits<double>::infinity();
  int max_concurrency = 0;  // 0 = unbounded
  std::string dataset;      // JSONL: a string, or {"prompt": ...}
  uint64_t seed = 0;
  std::string json_out;
  std::string backend = "grpc";  // grpc | openai
  std::string base_url;          // openai: http://host:port
  int vocab_size = 0;            // openai, random prompts: ids drawn below this (default 1000)
};

struct RequestRecord {
  clock_type::time_point start;
  std::vector<clock_type::time_point> token_times;  // one per message carrying tokens
  std::vector<int> tokens_per_message;
  int prompt_tokens = 0;
  int output_tokens = 0;
  bool ok = false;
  std::string error;
  clock_type::time_point end;
};

// One streaming call driven by gRPC's callback API (no thread per stream).
class Stream final : public grpc::ClientReadReactor<iris::v1::GenerateResponse> {
 public:
  Stream(iris::v1::Inference::Stub* stub, const ClientOptions& client,
         const iris::v1::GenerateRequest& req, RequestRecord& rec, std::function<void()> done)
      : rec_(rec), done_(std::move(done)) {
    client.authorize(ctx_);
    rec_.start = clock_type::now();
    stub->async()->Generate(&ctx_, &req, this);
    StartRead(&msg_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const auto now = clock_type::now();
    if (msg_.token_ids_size() > 0) {
      rec_.token_times.push_back(now);
      rec_.tokens_per_message.push_back(msg_.token_ids_size());
      rec_.output_tokens += msg_.token_ids_size();
    }
    if (!msg_.finish_reason().empty()) rec_.prompt_tokens = msg_.usage().prompt_tokens();
    StartRead(&msg_);
  }
  void OnDone(const grpc::Status& s) override {
    rec_.end = clock_type::now();
    rec_.ok = s.ok();
    if (!s.ok()) rec_.error = std::to_string(static_cast<int>(s.error_code())) + " " + s.error_message();
    auto done = std::move(done_);
    delete this;
    done();
  }

 private:
  grpc::ClientContext ctx_;
  iris::v1::GenerateResponse msg_;
  RequestRecord& rec_;
  std::function<void()> done_;
};

// One streamed /v1/completions call on its own thread (blocking client); each SSE event that
// carries text is a token arrival, as `vllm bench serve` counts them; the final usage chunk
// gives the token counts.
struct OpenAITarget {
  std::string host, port, prefix, api_key, model;
};

OpenAITarget parse_base_url(const std::string& url, const std::string& api_key, const std::string& model) {
  OpenAITarget t;
  if (url.rfind("http://", 0) != 0) fail("--base-url: expected http://HOST:PORT[/prefix], got '", url, "'");
  std::string rest = url.substr(7);
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  t.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!t.prefix.empty() && t.prefix.back() == '/') t.prefix.pop_back();
  if (t.prefix.size() >= 3 && t.prefix.compare(t.prefix.size() - 3, 3, "/v1") == 0)
    t.prefix.resize(t.prefix.size() - 3);
  const size_t colon = authority.rfind(':');
  t.host = authority.substr(0, colon);
  t.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  t.api_key = api_key;
  t.model = model;
  return t;
}

void run_openai_stream(const OpenAITarget& t, const nlohmann::json& body, RequestRecord& rec) {
  namespace net = boost::asio;
  namespace beast = boost::beast;
  namespace bhttp = boost::beast::http;
  rec.start = clock_type::now();
  try {
    net::io_context ioc;
    net::ip::tcp::resolver resolver(ioc);
    beast::tcp_stream stream(ioc);
    stream.connect(resolver.resolve(t.host, t.port));
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, t.prefix + "/v1/completions", 11};
    req.set(bhttp::field::host, t.host);
    req.set(bhttp::field::content_type, "application/json");
    if (!t.api_key.empty()) req.set(bhttp::field::authorization, "Bearer " + t.api_key);
    req.body() = body.dump();
    req.prepare_payload();
    bhttp::write(stream, req);
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    std::string pending;
    int usage_completion = -1;
    auto on_event = [&](const std::string& data) {
      if (data == "[DONE]") return;
      const nlohmann::json j = nlohmann::json::parse(data, nullptr, false);
      if (j.is_discarded()) return;
      if (j.contains("error")) rec.error = j["error"].dump();
      if (j.contains("choices") && j["choices"].is_array())
        for (const auto& c : j["choices"])
          if (c.contains("text") && c["text"].is_string() && !c["text"].get<std::string>().empty()) {
            rec.token_times.push_back(clock_type::now());
            rec.tokens_per_message.push_back(1);
          }
      if (j.contains("usage") && j["usage"].is_object()) {
        rec.prompt_tokens = j["usage"].value("prompt_tokens", 0);
        usage_completion = j["usage"].value("completion_tokens", 0);
      }
    };
    auto on_chunk = [&](std::uint64_t, beast::string_view chunk, beast::error_code&) -> std::size_t {
      pending.append(chunk.data(), chunk.size());
      size_t at;
      while ((at = pending.find("\n\n")) != std::string::npos) {
        const std::string event = pending.substr(0, at);
        pending.erase(0, at + 2);
        if (event.rfind("data: ", 0) == 0) on_event(event.substr(6));
      }
      return chunk.size();
    };
    parser.on_chunk_body(on_chunk);
    bhttp::read_header(stream, buffer, parser);
    const int status = parser.get().result_int();
    bhttp::read(stream, buffer, parser);
    rec.end = clock_type::now();
    if (status != 200) {
      rec.error = "HTTP " + std::to_string(status) + " " + parser.get().body();
      return;
    }
    rec.output_tokens = usage_completion >= 0 ? usage_completion : static_cast<int>(rec.token_times.size());
    rec.ok = rec.error.empty();
    beast::error_code ec;
    stream.socket().shutdown(net::ip::tcp::socket::shutdown_both, ec);
  } catch (const std::exception& e) {
    rec.end = clock_type::now();
    rec.error = e.what();
  }
}

struct Summary {
  double mean = 0, median = 0, p90 = 0, p99 = 0;
  size_t n = 0;
};

Summary summarize(std::vector<double> v) {
  Summary s;
  s.n = v.size();
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  // Linear interpolation between closest ranks (numpy's default percentile).
  auto pct = [&](double q) {
    const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(pos);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
  };
  s.median = pct(50);
  s.p90 = pct(90);
  s.p99 = pct(99);
  return s;
}

std::vector<std::string> read_dataset(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("--dataset ", path, ": cannot open");
  std::vector<std::string> prompts;
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    try {
      const nlohmann::json j = nlohmann::json::parse(line);
      prompts.push_back(j.is_string() ? j.get<std::string>() : j.at("prompt").get<std::string>());
    } catch (const nlohmann::json::exception& e) {
      fail("--dataset ", path, " line ", n, ": expected a JSON string or {\"prompt\": ...}: ", e.what());
    }
  }
  if (prompts.empty()) fail("--dataset ", path, ": no prompts");
  return prompts;
}

int run_bench_serve(const ServeBenchOptions& o) {
  IRIS_CHECK(o.num_prompts > 0 && o.input_len > 0 && o.output_len > 0)
      << "--num-prompts, --input-len and --output-len must be positive";
  IRIS_CHECK(o.request_rate > 0) << "--request-rate must be positive (inf = all at once)";
  IRIS_CHECK(o.backend == "grpc" || o.backend == "openai") << "--backend must be grpc or openai";
  const bool openai = o.backend == "openai";
  IRIS_CHECK(!openai || !o.base_url.empty()) << "--backend openai needs --base-url http://HOST:PORT";
  std::unique_ptr<iris::v1::Inference::Stub> stub;
  OpenAITarget target;
  iris::v1::ServerInfo info;
  if (openai) {
    target = parse_base_url(o.base_url, o.client.api_key, o.model);
    info.set_model_id(o.model.empty() ? "(served)" : o.model);
    info.set_vocab_size(o.vocab_size > 0 ? o.vocab_size : 1000);
  } else {
    stub = iris::v1::Inference::NewStub(o.client.channel());
    grpc::ClientContext ctx;
    o.client.authorize(ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    const grpc::Status s = stub->GetServerInfo(&ctx, {}, &info);
    if (!s.ok()) fail("GetServerInfo at ", o.client.address, ": ", s.error_message());
  }
  const std::string server_name = openai ? o.base_url : o.client.address;
  if (!openai && o.vocab_size > 0 && o.vocab_size < info.vocab_size()) info.set_vocab_size(o.vocab_size);
  IRIS_CHECK(info.vocab_size() > 0) << "the server reports no vocabulary size";

  std::mt19937_64 rng(o.seed);
  std::vector<iris::v1::GenerateRequest> requests(o.num_prompts);
  std::vector<std::string> texts;
  if (!o.dataset.empty()) texts = read_dataset(o.dataset);
  for (int i = 0; i < o.num_prompts; ++i) {
    auto& r = requests[i];
    r.set_model(o.model);
    if (!texts.empty()) {
      r.set_text(texts[static_cast<size_t>(i) % texts.size()]);
    } else {
      for (int k = 0; k < o.input_len; ++k)
        r.mutable_token_ids()->add_ids(static_cast<int32_t>(rng() % static_cast<uint64_t>(info.vocab_size())));
    }
    r.set_max_tokens(o.output_len);
    r.set_ignore_eos(true);
    r.set_temperature(0.0f);
  }

  std::vector<RequestRecord> records(o.num_prompts);
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, finished = 0;
  std::exponential_distribution<double> gap(std::isinf(o.request_rate) ? 1.0 : o.request_rate);
  const auto t0 = clock_type::now();
  auto next_arrival = t0;
  for (int i = 0; i < o.num_prompts; ++i) {
    if (!std::isinf(o.request_rate)) {
      std::this_thread::sleep_until(next_arrival);
      next_arrival += std::chrono::duration_cast<clock_type::duration>(
          std::chrono::duration<double>(gap(rng)));
    }
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return o.max_concurrency <= 0 || in_flight < o.max_concurrency; });
      ++in_flight;
    }
    auto done = [&] {
      std::lock_guard<std::mutex> lock(mu);
      --in_flight;
      ++finished;
      cv.notify_all();
    };
    if (openai) {
      nlohmann::json body = {{"max_tokens", o.output_len}, {"temperature", 0}, {"ignore_eos", true},
                             {"stream", true}, {"stream_options", {{"include_usage", true}}}};
      if (!o.model.empty()) body["model"] = o.model;
      const auto& r = requests[i];
      if (r.has_text()) body["prompt"] = r.text();
      else body["prompt"] = std::vector<int32_t>(r.token_ids().ids().begin(), r.token_ids().ids().end());
      std::thread([&target, body = std::move(body), &rec = records[i], done] {
        run_openai_stream(target, body, rec);
        done();
      }).detach();
    } else {
      new Stream(stub.get(), o.client, requests[i], records[i], done);
    }
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return finished == o.num_prompts; });
  }
  const double duration = std::chrono::duration<double>(clock_type::now() - t0).count();

  std::vector<double> ttft, tpot, itl, e2e;
  int64_t completed = 0, input_tokens = 0, output_tokens = 0;
  std::vector<std::string> errors;
  for (const auto& r : records) {
    if (!r.ok || r.token_times.empty()) {
      errors.push_back(r.error.empty() ? "no tokens" : r.error);
      continue;
    }
    ++completed;
    input_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
    const double first = std::chrono::duration<double>(r.token_times.front() - r.start).count();
    const double total = std::chrono::duration<double>(r.end - r.start).count();
    ttft.push_back(first * 1e3);
    e2e.push_back(total * 1e3);
    if (r.output_tokens > 1) {
      const double last = std::chrono::duration<double>(r.token_times.back() - r.start).count();
      tpot.push_back((last - first) / (r.output_tokens - 1) * 1e3);
    }
    for (size_t k = 1; k < r.token_times.size(); ++k)
      itl.push_back(std::chrono::duration<double>(r.token_times[k] - r.token_times[k - 1]).count() * 1e3);
  }

  const Summary s_ttft = summarize(ttft), s_tpot = summarize(tpot), s_itl = summarize(itl),
                s_e2e = summarize(e2e);
  std::printf("============ Serving Benchmark Result ============\n");
  std::printf("%-40s %10s\n", "Backend:", o.backend.c_str());
  std::printf("%-40s %10s\n", "Server:", server_name.c_str());
  std::printf("%-40s %10s\n", "Model:", info.model_id().c_str());
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.2f", o.request_rate);
  std::printf("%-40s %10s\n", "Request rate (req/s):", std::isinf(o.request_rate) ? "inf" : rate);
  std::printf("%-40s %10d\n", "Max concurrency:", o.max_concurrency);
  std::printf("%-40s %10lld\n", "Successful requests:", static_cast<long long>(completed));
  std::printf("%-40s %10zu\n", "Failed requests:", errors.size());
  std::printf("%-40s %10.2f\n", "Benchmark duration (s):", duration);
  std::printf("%-40s %10lld\n", "Total input tokens:", static_cast<long long>(input_tokens));
  std::printf("%-40s %10lld\n", "Total generated tokens:", static_cast<long long>(output_tokens));
  std::printf("%-40s %10.2f\n", "Request throughput (req/s):", completed / duration);
  std::printf("%-40s %10.2f\n", "Output token throughput (tok/s):", output_tokens / duration);
  std::printf("%-40s %10.2f\n", "Total token throughput (tok/s):",
              (input_tokens + output_tokens) / duration);
  auto section = [](const char* title, const char* key, const Summary& s) {
    std::printf("%s\n", title);
    std::printf("Mean %-35s %10.2f\n", (std::string(key) + " (ms):").c_str(), s.mean);
    std::printf("Median %-33s %10.2f\n", (std::string(key) + " (ms):").c_str(), s.median);
    std::printf("P90 %-36s %10.2f\n", (std::string(key) + " (ms):").c_str(), s.p90);
    std::printf("P99 %-36s %10.2f\n", (std::string(key) + " (ms):").c_str(), s.p99);
  };
  section("---------------Time to First Token----------------", "TTFT", s_ttft);
  section("-----Time per Output Token (excl. 1st token)------", "TPOT", s_tpot);
  section("---------------Inter-token Latency----------------", "ITL", s_itl);
  section("----------------End-to-end Latency----------------", "E2EL", s_e2e);
  std::printf("==================================================\n");
  for (size_t i = 0; i < std::min<size_t>(errors.size(), 5); ++i)
    std::fprintf(stderr, "error: %s\n", errors[i].c_str());

  if (!o.json_out.empty()) {
    auto js = [](const Summary& s) {
      return nlohmann::json{{"mean_ms", s.mean}, {"median_ms", s.median}, {"p90_ms", s.p90},
                            {"p99_ms", s.p99}, {"count", s.n}};
    };
    nlohmann::json j = {
        {"backend", o.backend},
        {"address", server_name},
        {"model", info.model_id()},
        {"num_prompts", o.num_prompts},
        {"input_len", texts.empty() ? o.input_len : -1},
        {"output_len", o.output_len},
        {"request_rate", std::isinf(o.request_rate) ? -1.0 : o.request_rate},
        {"max_concurrency", o.max_concurrency},
        {"completed", completed},
        {"failed", errors.size()},
        {"duration_s", duration},
        {"total_input_tokens", input_tokens},
        {"total_output_tokens", output_tokens},
        {"request_throughput", completed / duration},
        {"output_throughput", output_tokens / duration},
        {"total_token_throughput", (input_tokens + output_tokens) / duration},
        {"ttft", js(s_ttft)},
        {"tpot", js(s_tpot)},
        {"itl", js(s_itl)},
        {"e2el", js(s_e2e)},
    };
    std::ofstream out(o.json_out);
    if (!out) fail("--json ", o.json_out, ": cannot write");
    out << j.dump(2) << "\n";
  }
  return errors.empty() ? 0 : 1;
}

}  // namespace

std::function<int()> add_bench_serve(CLI::App& bench) {
  auto opts = std::make_shared<ServeBenchOptions>();
  CLI::App* sub = bench.add_subcommand("serve", "Load-test a running iris serve");
  opts->client.add_to(*sub);
  sub->add_option("--model", opts->model, "model name (default: the served one)");
  sub->add_option("--num-prompts", opts->num_prompts)->capture_default_str();
  sub->add_option("--input-len", opts->input_len, "random prompt length in tokens")
      ->capture_default_str();
  sub->add_option("--output-len", opts->output_len, "tokens generated per request (EOS ignored)")
      ->capture_default_str();
  sub->add_option("--request-rate", opts->request_rate,
                  "Poisson arrival rate in requests/s (default inf: all at once)");
  sub->add_option("--max-concurrency", opts->max_concurrency, "requests in flight at most (0 = no limit)")
      ->capture_default_str();
  sub->add_option("--dataset", opts->dataset,
                  "JSONL prompts (a string or {\"prompt\": ...} per line) instead of random ids");
  sub->add_option("--seed", opts->seed)->capture_default_str();
  sub->add_option("--json", opts->json_out, "also write the results as JSON to this file");
  sub->add_option("--backend", opts->backend,
                  "grpc (iris.v1 at --address) or openai (any OpenAI-compatible server at --base-url)")
      ->capture_default_str();
  sub->add_option("--base-url", opts->base_url, "openai backend: http://HOST:PORT");
  sub->add_option("--vocab-size", opts->vocab_size,
                  "random prompts: token ids are drawn below this (openai backend default 1000; grpc: the vocabulary)");
  return [opts, sub]() -> int {
    if (!sub->parsed()) return -1;
    return run_bench_serve(*opts);
  };
}

}  // namespace iris::cli
