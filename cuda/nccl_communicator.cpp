// NCCL all-reduce for tensor parallelism across the GPUs of one process.
//
// NCCL is loaded at run time (dlopen of libnccl.so.2, or $IRIS_NCCL_LIBRARY) the first time
// a group of two or more ranks is made, so a single-GPU run never needs the library (it is
// ~220 MB and not every GPU host has it). nccl.h is used for its types only.
//
// Threads and locks. Rank r's thread enqueues its collectives; another thread (a peer that
// failed, or the watchdog below) may abort the whole group at any time. ncclCommAbort frees
// the communicator, so every NCCL call on rank r's communicator happens under rank r's
// mutex, after checking the group's aborted flag under that same mutex: abort() sets the
// flag first and then takes each rank's mutex before aborting its communicator, so no call
// can start on an aborted communicator. Communicators are non-blocking (ncclConfig_t
// blocking = 0): a host call never waits for a peer while holding the mutex, it returns
// ncclInProgress and the caller polls, giving the mutex up when the group is aborted.
//
// Completion. all_reduce_sum only enqueues: it records an event after the collective (not
// while the stream is being captured into a CUDA graph) and hands it to the group's watchdog
// thread, which polls the oldest outstanding event of every rank. A collective that has not
// completed within the timeout, or an asynchronous NCCL error, aborts the group; the aborted
// kernels return, and check_nccl_communicator() — called by the backend after every stream wait —
// throws on every rank, so no rank returns the garbage its aborted collectives left.
#include "cuda/nccl_communicator.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

#include "engine/core/check.h"

namespace iris {
namespace {

// --- the NCCL entry points, resolved from the loaded library ----------------------------
struct NcclApi {
  std::string path;  // the file the loader used
  int version = 0;
  ncclResult_t (*GetVersion)(int*) = nullptr;
  const char* (*GetErrorString)(ncclResult_t) = nullptr;
  ncclResult_t (*GetUniqueId)(ncclUniqueId*) = nullptr;
  ncclResult_t (*CommInitRankConfig)(ncclComm_t*, int, ncclUniqueId, int, ncclConfig_t*) = nullptr;
  ncclResult_t (*GroupStart)() = nullptr;
  ncclResult_t (*GroupEnd)() = nullptr;
  ncclResult_t (*AllReduce)(const void*, void*, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                            cudaStream_t) = nullptr;
  ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t*) = nullptr;
  ncclResult_t (*CommFinalize)(ncclComm_t) = nullptr;
  ncclResult_t (*CommDestroy)(ncclComm_t) = nullptr;
  ncclResult_t (*CommAbort)(ncclComm_t) = nullptr;
};

template <typename F>
void resolve(void* lib, const char* name, F*& fn, const std::string& path) {
  fn = reinterpret_cast<F*>(dlsym(lib, name));
  if (!fn) fail("NCCL library ", path, " lacks ", name, " (NCCL >= 2.14 is needed)");
}

const NcclApi& nccl() {
  static std::once_flag once;
  static NcclApi api;
  std::call_once(once, [] {
    const char* env = std::getenv("IRIS_NCCL_LIBRARY");
    const std::string want = env && *env ? env : "libnccl.so.2";
    void* lib = dlopen(want.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib)
      fail("tensor parallelism on CUDA needs NCCL, and ", want, " cannot be loaded (", dlerror(),
           "); put its folder on LD_LIBRARY_PATH or set IRIS_NCCL_LIBRARY to the file");
    resolve(lib, "ncclGetVersion", api.GetVersion, want);
    resolve(lib, "ncclGetErrorString", api.GetErrorString, want);
    resolve(lib, "ncclGetUniqueId", api.GetUniqueId, want);
    resolve(lib, "ncclCommInitRankConfig", api.CommInitRankConfig, want);
    resolve(lib, "ncclGroupStart", api.GroupStart, want);
    resolve(lib, "ncclGroupEnd", api.GroupEnd, want);
    resolve(lib, "ncclAllReduce", api.AllReduce, want);
    resolve(lib, "ncclCommGetAsyncError", api.CommGetAsyncError, want);
    resolve(lib, "ncclCommFinalize", api.CommFinalize, want);
    resolve(lib, "ncclCommDestroy", api.CommDestroy, want);
    resolve(lib, "ncclCommAbort", api.CommAbort, want);
    Dl_info info{};
    api.path = dladdr(reinterpret_cast<void*>(api.AllReduce), &info) && info.dli_fname
                   ? info.dli_fname
                   : want;
    api.GetVersion(&api.version);
    // Communicator configs (non-blocking communicators) exist from 2.14 on.
    if (api.version < NCCL_VERSION(2, 14, 0))
      fail("NCCL ", api.version, " at ", api.path, " is too old: 2.14 or newer is needed");
  });
  return api;
}

std::string nccl_error(ncclResult_t r) { return nccl().GetErrorString(r); }

bool nccl_failed(ncclResult_t r) { return r != ncclSuccess && r != ncclInProgress; }

using Clock = std::chrono::steady_clock;

// --- one group of ranks ------------------------------------------------------------------
struct Pending {
  cudaEvent_t event;
  Clock::time_point deadline;
  uint64_t seq;
};

struct Rank {
  std::mutex mu;  // guards comm and every NCCL call on it, and the event queues
  ncclComm_t comm = nullptr;
  int device = 0;
  cudaStream_t stream = nullptr;
  std::deque<Pending> pending;       // recorded, not yet seen complete, oldest first
  std::vector<cudaEvent_t> spare;    // completed, reusable
  uint64_t next_seq = 0;
};

class NcclGroup {
 public:
  NcclGroup(const std::vector<int>& devices, const std::vector<void*>& streams,
            std::chrono::milliseconds timeout)
      : timeout_(timeout), ranks_(devices.size()) {
    const NcclApi& api = nccl();
    const int world = static_cast<int>(devices.size());
    for (int r = 0; r < world; ++r) {
      ranks_[r].device = devices[r];
      ranks_[r].stream = static_cast<cudaStream_t>(streams[r]);
    }
    try {
      ncclUniqueId id;
      check_call(api.GetUniqueId(&id), "ncclGetUniqueId");
      ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
      config.blocking = 0;
      // The config carries its size and version, so an older library reads the fields it
      // knows (assumed from NCCL's documentation; not yet run against an older NCCL).
      check_call(api.GroupStart(), "ncclGroupStart");
      for (int r = 0; r < world; ++r) {
        if (cudaSetDevice(devices[r]) != cudaSuccess) fail("NCCL init: cannot select GPU ", devices[r]);
        check_call(api.CommInitRankConfig(&ranks_[r].comm, world, id, r, &config),
                   "ncclCommInitRankConfig");
      }
      check_call(api.GroupEnd(), "ncclGroupEnd");
      for (int r = 0; r < world; ++r) {
        const std::string why = wait_for_comm(r, "ncclCommInitRankConfig");
        if (!why.empty()) {
          abort(why);
          fail("NCCL init failed: ", why);
        }
      }
    } catch (const Error& e) {
      abort(e.what());  // releases the communicators made so far
      throw;
    }
    watchdog_ = std::thread([this] { watch(); });
  }

  ~NcclGroup() {
    {
      std::lock_guard<std::mutex> lock(watch_mu_);
      stop_ = true;
    }
    watch_cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    const NcclApi& api = nccl();
    // A clean shutdown finalises every rank's communicator (flushing outstanding work; the
    // ranks finalise together, hence one group) and then destroys them; a group that failed,
    // or whose finalisation does not finish within the timeout, is aborted instead. No rank
    // thread is left: the last communicator holding this group is being destroyed.
    bool clean = !aborted_.load();
    if (clean && !nccl_failed(api.GroupStart())) {
      for (Rank& rk : ranks_)
        if (clean && rk.comm) clean = !nccl_failed(api.CommFinalize(rk.comm));
      if (nccl_failed(api.GroupEnd())) clean = false;  // always closes the group it opened
    } else {
      clean = false;
    }
    const auto deadline = Clock::now() + timeout_;
    for (Rank& rk : ranks_) {
      ncclResult_t state = ncclInProgress;
      while (clean && rk.comm && state == ncclInProgress) {
        if (nccl_failed(api.CommGetAsyncError(rk.comm, &state)) || nccl_failed(state) ||
            Clock::now() > deadline)
          clean = false;
        else if (state == ncclInProgress)
          std::this_thread::yield();
      }
    }
    for (Rank& rk : ranks_) {
      std::lock_guard<std::mutex> lock(rk.mu);
      cudaSetDevice(rk.device);
      if (rk.comm) {
        if (clean) api.CommDestroy(rk.comm);
        else api.CommAbort(rk.comm);
        rk.comm = nullptr;
      }
      for (const Pending& p : rk.pending) cudaEventDestroy(p.event);
      for (cudaEvent_t e : rk.spare) cudaEventDestroy(e);
    }
  }

  std::string failure() const {
    std::lock_guard<std::mutex> lock(failure_mu_);
    return failure_;
  }

  // Marks the group failed, then aborts every communicator under its rank's mutex.
  void abort(const std::string& why) {
    {
      std::lock_guard<std::mutex> lock(failure_mu_);
      if (aborted_.load()) return;
      failure_ = why;
      aborted_.store(true);
    }
    for (Rank& rk : ranks_) {
      std::lock_guard<std::mutex> lock(rk.mu);
      if (rk.comm) nccl().CommAbort(rk.comm);
      rk.comm = nullptr;
    }
    watch_cv_.notify_all();
  }

  void all_reduce(int r, Tensor& x) {
    ncclDataType_t type;
    switch (x.dtype) {
      case DType::F32: type = ncclFloat32; break;
      case DType::BF16: type = ncclBfloat16; break;
      case DType::F16: type = ncclFloat16; break;
      default: fail("NCCL all-reduce of ", dtype_name(x.dtype));
    }
    Rank& rk = ranks_[r];
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(rk.stream, &capture) != cudaSuccess)
      fail("rank ", r, ": cannot query the stream's capture state");
    {
      std::unique_lock<std::mutex> lock(rk.mu);
      if (aborted_.load() || !rk.comm) {
        lock.unlock();
        fail("tensor-parallel group failed: ", failure());
      }
      const ncclResult_t res = nccl().AllReduce(x.data, x.data, static_cast<size_t>(x.numel()), type,
                                                ncclSum, rk.comm, rk.stream);
      if (nccl_failed(res)) {
        lock.unlock();
        const std::string why = "rank " + std::to_string(r) + ": ncclAllReduce: " + nccl_error(res);
        abort(why);
        fail("tensor-parallel group failed: ", why);
      }
    }
    // Non-blocking communicator: the call may still be enqueueing (e.g. connecting to peers
    // on first use). Wait for that, not for the collective itself.
    const std::string why = wait_for_comm(r, "ncclAllReduce");
    if (!why.empty()) {
      abort(why);
      fail("tensor-parallel group failed: ", failure());
    }
    if (capture != cudaStreamCaptureStatusNone) return;  // replays: check_nccl_communicator()
    std::lock_guard<std::mutex> lock(rk.mu);
    cudaEvent_t ev;
    if (!rk.spare.empty()) {
      ev = rk.spare.back();
      rk.spare.pop_back();
    } else if (cudaEventCreateWithFlags(&ev, cudaEventDisableTiming) != cudaSuccess) {
      fail("rank ", r, ": cudaEventCreate failed");
    }
    if (cudaEventRecord(ev, rk.stream) != cudaSuccess) {
      cudaEventDestroy(ev);
      fail("rank ", r, ": cudaEventRecord after an all-reduce failed");
    }
    rk.pending.push_back(Pending{ev, Clock::now() + timeout_, rk.next_seq++});
    watch_cv_.notify_all();
  }

  // Throws when the group failed (its collectives may have been aborted mid-way) or NCCL
  // reports an asynchronous error on rank r.
  void check(int r) {
    if (aborted_.load()) fail("tensor-parallel group failed: ", failure());
    Rank& rk = ranks_[r];
    std::string why;
    {
      std::lock_guard<std::mutex> lock(rk.mu);
      if (aborted_.load() || !rk.comm) {
        why = failure();
      } else {
        ncclResult_t state = ncclSuccess;
        const ncclResult_t q = nccl().CommGetAsyncError(rk.comm, &state);
        if (nccl_failed(q)) state = q;
        if (nccl_failed(state)) why = "rank " + std::to_string(r) + ": NCCL " + nccl_error(state);
      }
    }
    if (!why.empty()) {
      abort(why);
      fail("tensor-parallel group failed: ", failure());
    }
  }

 private:
  static void check_call(ncclResult_t r, const char* what) {
    if (nccl_failed(r)) fail("NCCL ", what, ": ", nccl_error(r));
  }

  // Polls rank r's communicator until its last host call finished; "" on success, else why
  // it failed (error, timeout, or the group aborted meanwhile).
  std::string wait_for_comm(int r, const char* what) {
    Rank& rk = ranks_[r];
    const auto deadline = Clock::now() + timeout_;
    while (true) {
      {
        std::lock_guard<std::mutex> lock(rk.mu);
        if (aborted_.load() || !rk.comm) return failure();
        ncclResult_t state = ncclSuccess;
        const ncclResult_t q = nccl().CommGetAsyncError(rk.comm, &state);
        if (nccl_failed(q)) state = q;
        if (state == ncclSuccess) return "";
        if (state != ncclInProgress)
          return "rank " + std::to_string(r) + ": " + what + ": " + nccl_error(state);
      }
      if (Clock::now() > deadline)
        return "rank " + std::to_string(r) + ": " + what + " did not finish within " +
               std::to_string(timeout_.count()) + " ms";
      std::this_thread::yield();
    }
  }

  // The watchdog: retires completed all-reduces, aborts the group on a late one or an
  // asynchronous NCCL error. It never blocks on a stream.
  void watch() {
    // Queries from this thread must never invalidate a rank thread's graph capture (graph.cpp
    // captures thread-locally; relaxed here covers a capture in global mode too).
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    cudaThreadExchangeStreamCaptureMode(&mode);
    while (true) {
      {
        std::unique_lock<std::mutex> lock(watch_mu_);
        watch_cv_.wait_for(lock, std::chrono::milliseconds(1));
        if (stop_) return;
      }
      if (aborted_.load()) continue;
      std::string why;
      for (size_t r = 0; r < ranks_.size() && why.empty(); ++r) {
        Rank& rk = ranks_[r];
        std::lock_guard<std::mutex> lock(rk.mu);
        while (!rk.pending.empty() && why.empty()) {
          Pending& p = rk.pending.front();
          const cudaError_t q = cudaEventQuery(p.event);
          if (q == cudaSuccess) {
            rk.spare.push_back(p.event);
            rk.pending.pop_front();
            continue;
          }
          if (q != cudaErrorNotReady) {
            why = "rank " + std::to_string(r) + ": CUDA error after all-reduce #" +
                  std::to_string(p.seq) + ": " + cudaGetErrorString(q);
          } else if (rk.comm) {
            ncclResult_t state = ncclSuccess;
            const ncclResult_t e = nccl().CommGetAsyncError(rk.comm, &state);
            if (nccl_failed(e)) state = e;
            if (nccl_failed(state))
              why = "rank " + std::to_string(r) + ": NCCL " + nccl_error(state);
            else if (Clock::now() > p.deadline)
              why = "rank " + std::to_string(r) + ": all-reduce #" + std::to_string(p.seq) +
                    " not complete after " + std::to_string(timeout_.count()) + " ms";
          }
          break;
        }
      }
      if (!why.empty()) abort(why);
    }
  }

  const std::chrono::milliseconds timeout_;
  std::vector<Rank> ranks_;
  mutable std::mutex failure_mu_;
  std::string failure_;
  std::atomic<bool> aborted_{false};
  std::mutex watch_mu_;
  std::condition_variable watch_cv_;
  bool stop_ = false;
  std::thread watchdog_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroup> group, int rank, int world)
      : group_(std::move(group)), rank_(rank), world_(world) {}

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce_sum(Tensor& x) override {
    if (group_) group_->all_reduce(rank_, x);
  }

  void abort(const std::string& why) override {
    if (group_) group_->abort(why);
  }

  void check() {
    if (group_) group_->check(rank_);
  }

 private:
  std::shared_ptr<NcclGroup> group_;  // null for a group of one: no NCCL at all
  int rank_, world_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_nccl_communicators(
    const std::vector<int>& devices, const std::vector<void*>& streams,
    std::chrono::milliseconds timeout) {
  IRIS_CHECK(!devices.empty() && devices.size() == streams.size())
      << devices.size() << " devices, " << streams.size() << " streams";
  const int world = static_cast<int>(devices.size());
  std::shared_ptr<NcclGroup> group;
  if (world > 1) group = std::make_shared<NcclGroup>(devices, streams, timeout);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world; ++r) out.push_back(std::make_unique<NcclCommunicator>(group, r, world));
  return out;
}

void check_nccl_communicator(Communicator* comm) {
  if (auto* nccl_comm = dynamic_cast<NcclCommunicator*>(comm)) nccl_comm->check();
}

std::string nccl_library_path() {
  const NcclApi& api = nccl();
  return api.path + " (NCCL " + std::to_string(api.version) + ")";
}

}  // namespace iris
