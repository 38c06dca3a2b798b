// Benchmark of the scheduler's own cost per step: schedule() + update() with no model, for
//   decode:  256 running sequences decoding (contexts growing from 512 to ~1500 tokens) and
//            64 more waiting (max_num_seqs = 256 keeps them waiting);
//   mixed:   256 running with short outputs, so requests finish every step and waiting
//            ones (sharing a system prompt) are admitted with chunked prefill in the same
//            steps as the decodes;
//   tight:   the decode workload with a KV cache too small for it (preemption churn).
// Prints microseconds per step (mean, p50, p99). A figure, never a test.
//
//   ninja -C build-sched bench_scheduler && build-sched/tests/scheduler/bench_scheduler
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <string>
#include <vector>

#include "scheduler/scheduler.h"

using namespace iris::sched;

namespace {

struct Figures {
  double mean_us = 0, p50_us = 0, p99_us = 0;
  double tokens_per_step = 0, seqs_per_step = 0;
  int64_t preemptions = 0;
  double cpu_mean_us = 0, cpu_p99_us = 0;  // thread CPU time: immune to a busy machine
};

double thread_cpu_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % 32000);
  return t;
}

Figures summarize(std::vector<double>& us, int64_t tokens, int64_t seqs, int64_t preemptions) {
  Figures f;
  std::sort(us.begin(), us.end());
  double sum = 0;
  for (double x : us) sum += x;
  f.mean_us = sum / us.size();
  f.p50_us = us[us.size() / 2];
  f.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  f.tokens_per_step = static_cast<double>(tokens) / us.size();
  f.seqs_per_step = static_cast<double>(seqs) / us.size();
  f.preemptions = preemptions;
  return f;
}

// Runs `warmup` untimed steps, then `steps` timed ones. `refill` is called before every
// step to add requests.
template <typename Refill>
Figures run(Scheduler& s, int warmup, int steps, Refill refill) {
  SchedulerOutput out;
  std::vector<int32_t> sampled;
  std::vector<double> us, cpu_us;
  us.reserve(static_cast<size_t>(steps));
  cpu_us.reserve(static_cast<size_t>(steps));
  int64_t tokens = 0, seqs = 0;
  int64_t preempt_before = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    refill(i);
    if (i == warmup) preempt_before = s.stats().num_preemptions;
    const double c0 = thread_cpu_us();
    const auto t0 = std::chrono::steady_clock::now();
    s.schedule(out);
    sampled.assign(out.scheduled.size(), Scheduler::kNoToken);
    for (size_t k = 0; k < out.scheduled.size(); ++k) {
      if (out.scheduled[k].samples) sampled[k] = static_cast<int32_t>((i * 7 + k) % 32000);
    }
    s.update(out, sampled);
    const auto t1 = std::chrono::steady_clock::now();
    const double c1 = thread_cpu_us();
    if (i >= warmup) {
      us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
      cpu_us.push_back(c1 - c0);
      tokens += out.total_num_scheduled_tokens;
      seqs += static_cast<int64_t>(out.scheduled.size());
    }
  }
  Figures f = summarize(us, tokens, seqs, s.stats().num_preemptions - preempt_before);
  const Figures cpu = summarize(cpu_us, tokens, seqs, 0);
  f.cpu_mean_us = cpu.mean_us;
  f.cpu_p99_us = cpu.p99_us;
  return f;
}

void print(const char* name, const Figures& f) {
  std::printf(
      "%-7s wall %7.1f us/step mean %7.1f p50 %7.1f p99 | cpu %7.1f mean %7.1f p99 |"
      " %5.1f seqs %6.1f tokens/step, %lld preemptions\n",
      name, f.mean_us, f.p50_us, f.p99_us, f.cpu_mean_us, f.cpu_p99_us, f.seqs_per_step,
      f.tokens_per_step, static_cast<long long>(f.preemptions));
}

SchedulerConfig config(int num_blocks) {
  SchedulerConfig c;
  c.block_size = 16;
  c.num_blocks = num_blocks;
  c.max_num_seqs = 256;
  c.max_num_batched_tokens = 2048;
  c.max_model_len = 4096;
  return c;
}

Figures bench_decode(int num_blocks) {
  Scheduler s(config(num_blocks));
  std::mt19937_64 rng(1);
  for (int i = 0; i < 256 + 64; ++i) {
    RequestSpec r;
    r.id = "request-" + std::to_string(i) + "-0123456789abcdef";  // uuid-sized ids
    r.prompt = random_tokens(rng, 512);
    r.max_tokens = 3000;
    r.arrival_seq = static_cast<uint64_t>(i);
    if (!s.add_request(std::move(r)).ok()) std::abort();
  }
  // 256 * 512 prompt tokens at 2048 per step: 64 prefill steps, then pure decodes.
  return run(s, 100, 1000, [](int) {});
}

Figures bench_mixed() {
  Scheduler s(config(1 + 40000));
  std::mt19937_64 rng(2);
  const auto system_prompt = random_tokens(rng, 256);
  int next_id = 0;
  auto add = [&] {
    RequestSpec r;
    r.id = "request-" + std::to_string(next_id) + "-0123456789abcdef";
    r.prompt = system_prompt;
    auto user = random_tokens(rng, 32 + static_cast<int>(rng() % 480));
    r.prompt.insert(r.prompt.end(), user.begin(), user.end());
    r.max_tokens = 32 + static_cast<int>(rng() % 224);
    r.arrival_seq = static_cast<uint64_t>(next_id++);
    if (!s.add_request(std::move(r)).ok()) std::abort();
  };
  return run(s, 300, 2000, [&](int) {
    while (s.num_waiting() < 64 || s.num_running() + s.num_waiting() < 256 + 64) add();
  });
}

}  // namespace

int main() {
  std::printf(
      "scheduler step cost: schedule() + update(), block_size 16, max_num_seqs 256, "
      "max_num_batched_tokens 2048\n");
  print("decode", bench_decode(1 + 40000));
  print("mixed", bench_mixed());
  print("tight", bench_decode(1 + 256 * 40));
  return 0;
}
