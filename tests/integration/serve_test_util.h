// Helpers shared by the `iris serve` integration tests: a server process on a free loopback
// port, health polling, and synchronous Generate/Chat calls collected into one result.
#pragma once

#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "health.grpc.pb.h"
#include "iris/v1/inference.grpc.pb.h"

namespace iris_test {

inline int g_failures = 0;
#define EXPECT(cond, ...)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      ++::iris_test::g_failures;                                              \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
      std::fprintf(stderr, __VA_ARGS__);                                      \
      std::fprintf(stderr, "\n");                                             \
    }                                                                         \
  } while (0)

inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

inline std::string run_capture(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* f = popen(cmd.c_str(), "r");
  if (!f) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const int st = pclose(f);
  if (status) *status = st;
  return out;
}

inline grpc::ChannelArguments quick_reconnect() {
  grpc::ChannelArguments args;  // reconnect quickly while the server starts
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 500);
  return args;
}

inline int health(grpc::health::v1::Health::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status s = stub.Check(&ctx, req, &resp);
  return s.ok() ? resp.status() : -1;
}

// `iris serve` as a child process; killed on every exit path.
struct ServerProcess {
  pid_t pid = -1;
  int port = 0;
  int http_port = 0;  // the OpenAI-compatible HTTP API

  // Starts `iris serve --host 127.0.0.1 --port P` plus `args`, with `env` ("NAME=value")
  // added to its environment.
  void start(const std::string& iris, const std::vector<std::string>& args,
             const std::vector<std::string>& env = {}) {
    port = free_port();
    http_port = free_port();
    pid = fork();
    if (pid == 0) {
      for (const auto& e : env) putenv(strdup(e.c_str()));
      std::vector<std::string> all = {iris, "serve", "--host", "127.0.0.1", "--port",
                                      std::to_string(port), "--http-port", std::to_string(http_port)};
      all.insert(all.end(), args.begin(), args.end());
      std::vector<char*> argv;
      for (auto& a : all) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(iris.c_str(), argv.data());
      std::perror("execv");
      _exit(127);
    }
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }

  // Polls health over `channel` until SERVING; false if the process died or 60 s passed.
  bool wait_serving(const std::shared_ptr<grpc::Channel>& channel) {
    auto hstub = grpc::health::v1::Health::NewStub(channel);
    const auto t0 = std::chrono::steady_clock::now();
    while (health(*hstub) != grpc::health::v1::HealthCheckResponse::SERVING) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        pid = -1;
        std::fprintf(stderr, "FAIL: iris serve exited early (status %d)\n", st);
        ++g_failures;  // a block that cannot start is a failure, never a silent skip
        return false;
      }
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) {
        std::fprintf(stderr, "FAIL: server not SERVING after 60 s\n");
        ++g_failures;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return true;
  }

  // Sends `sig` and waits up to `limit`; returns the wait status, or -1 on timeout.
  int stop(int sig, std::chrono::seconds limit, double* seconds = nullptr) {
    if (pid <= 0) return -1;
    kill(pid, sig);
    int st = 0;
    pid_t done = 0;
    const auto t0 = std::chrono::steady_clock::now();
    while ((done = waitpid(pid, &st, WNOHANG)) == 0 &&
           std::chrono::steady_clock::now() - t0 < limit)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (seconds) *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (done != pid) return -1;
    pid = -1;
    return st;
  }

  ~ServerProcess() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

struct StreamResult {
  grpc::Status status;
  std::vector<iris::v1::GenerateResponse> messages;
  std::vector<int32_t> ids(int index = 0) const {
    std::vector<int32_t> v;
    for (const auto& m : messages)
      if (m.index() == index) v.insert(v.end(), m.token_ids().begin(), m.token_ids().end());
    return v;
  }
  std::string text(int index = 0) const {
    std::string t;
    for (const auto& m : messages)
      if (m.index() == index) t += m.text();
    return t;
  }
  std::vector<int32_t> prompt_ids() const {
    for (const auto& m : messages)
      if (m.prompt_token_ids_size() > 0) return {m.prompt_token_ids().begin(), m.prompt_token_ids().end()};
    return {};
  }
};

// Runs a server-streaming call to completion. `prepare` may add metadata or a deadline.
template <class Req, class Start, class Prepare>
StreamResult collect(const Req& req, Start start, Prepare prepare) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  prepare(ctx);
  StreamResult r;
  auto reader = start(&ctx, req);
  iris::v1::GenerateResponse m;
  while (reader->Read(&m)) r.messages.push_back(m);
  r.status = reader->Finish();
  return r;
}

inline iris::v1::GenerateRequest greedy_request(const std::vector<int32_t>& prompt, int max_tokens) {
  iris::v1::GenerateRequest r;
  for (int32_t t : prompt) r.mutable_token_ids()->add_ids(t);
  r.set_max_tokens(max_tokens);
  r.set_temperature(0.0f);
  r.set_ignore_eos(true);
  return r;
}

}  // namespace iris_test
