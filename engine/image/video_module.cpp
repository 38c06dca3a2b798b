// The FFmpeg-backed video decoder, built as its own loadable module (libiris_video.so) so that
// the server binary does not depend on FFmpeg and its codec libraries: iris loads it on the
// first video file (video_decode.cpp) and refuses files when it is absent. Everything here
// runs behind the two C entry points at the end; no exception leaves the module.
#include "engine/image/video_module.h"

#include "engine/core/check.h"
#include "engine/image/video_decode.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <functional>
#include <mutex>

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/dict.h>
#include <libavutil/error.h>
#include <libavutil/imgutils.h>
#include <libavutil/log.h>
#include <libswscale/swscale.h>
}

namespace iris::image {
namespace {

// Demuxers a request may use, and the decoders its video stream may need. Keeping the list
// short keeps the attack surface to formats people send (and keeps playlist-style demuxers,
// which open further resources, out).
constexpr const char* kDemuxers = "mov,matroska,avi";
constexpr const char* kDecoders =
    "h264,hevc,mpeg4,vp8,vp9,av1,libdav1d,mjpeg,mpeg1video,mpeg2video,msmpeg4v2,msmpeg4v3,theora";

std::string av_message(int err) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {};
  av_strerror(err, buf, sizeof(buf));
  return buf;
}

// The request's bytes as an AVIOContext: read and seek within the span.
struct MemoryReader {
  std::span<const uint8_t> data;
  int64_t pos = 0;

  static int read(void* opaque, uint8_t* buf, int size) {
    auto* r = static_cast<MemoryReader*>(opaque);
    const int64_t left = static_cast<int64_t>(r->data.size()) - r->pos;
    if (left <= 0) return AVERROR_EOF;
    const int n = static_cast<int>(std::min<int64_t>(left, size));
    std::memcpy(buf, r->data.data() + r->pos, static_cast<size_t>(n));
    r->pos += n;
    return n;
  }
  static int64_t seek(void* opaque, int64_t offset, int whence) {
    auto* r = static_cast<MemoryReader*>(opaque);
    const auto size = static_cast<int64_t>(r->data.size());
    if (whence & AVSEEK_SIZE) return size;
    int64_t to = 0;
    switch (whence & ~AVSEEK_FORCE) {
      case SEEK_SET: to = offset; break;
      case SEEK_CUR: to = r->pos + offset; break;
      case SEEK_END: to = size + offset; break;
      default: return AVERROR(EINVAL);
    }
    if (to < 0 || to > size) return AVERROR(EINVAL);
    r->pos = to;
    return to;
  }
};

struct IoFree {
  void operator()(AVIOContext* io) const {
    av_freep(&io->buffer);
    avio_context_free(&io);
  }
};
struct FormatFree {
  // Also for a context never opened; a custom AVIOContext is left to IoFree.
  void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};

// An opened container over memory, its video stream found. Members release in reverse order
// (the demuxer before its reader), also when the constructor throws.
class Demuxer {
 public:
  Demuxer(std::span<const uint8_t> bytes, const VideoLimits& limits) : reader_{bytes} {
    static std::once_flag quiet;
    // Corrupt input makes FFmpeg log per packet; failures reach the client as errors instead.
    std::call_once(quiet, [] { av_log_set_level(AV_LOG_QUIET); });
    if (bytes.size() > limits.max_bytes)
      fail("a video file of ", bytes.size(), " bytes, at most ", limits.max_bytes);
    if (bytes.empty()) fail("the video file is empty");
    constexpr int kBuf = 1 << 16;
    auto* buf = static_cast<uint8_t*>(av_malloc(kBuf));
    IRIS_CHECK(buf) << "out of memory for the video reader";
    io_.reset(avio_alloc_context(buf, kBuf, 0, &reader_, &MemoryReader::read, nullptr, &MemoryReader::seek));
    if (!io_) {
      av_free(buf);
      fail("out of memory for the video reader");
    }
    AVFormatContext* fmt = avformat_alloc_context();
    IRIS_CHECK(fmt) << "out of memory for the video demuxer";
    fmt->pb = io_.get();
    fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    AVDictionary* opts = nullptr;
    av_dict_set(&opts, "format_whitelist", kDemuxers, 0);
    av_dict_set(&opts, "codec_whitelist", kDecoders, 0);
    av_dict_set(&opts, "protocol_whitelist", "none", 0);
    const int err = avformat_open_input(&fmt, nullptr, nullptr, &opts);  // frees fmt on failure
    av_dict_free(&opts);
    if (err < 0)
      fail("not a video file this server reads (MP4/QuickTime, WebM/Matroska or AVI): ",
           av_message(err));
    fmt_.reset(fmt);
    if (const int e = avformat_find_stream_info(fmt_.get(), nullptr); e < 0)
      fail("unreadable video file: ", av_message(e));
    stream_ = av_find_best_stream(fmt_.get(), AVMEDIA_TYPE_VIDEO, -1, -1, nullptr, 0);
    if (stream_ < 0) fail("the file holds no video stream");
    // Only the video stream's packets are read.
    for (unsigned i = 0; i < fmt_->nb_streams; ++i)
      if (static_cast<int>(i) != stream_) fmt_->streams[i]->discard = AVDISCARD_ALL;
  }
  Demuxer(const Demuxer&) = delete;
  Demuxer& operator=(const Demuxer&) = delete;

  AVFormatContext* fmt() const { return fmt_.get(); }
  AVStream* stream() const { return fmt_->streams[stream_]; }
  int index() const { return stream_; }

 private:
  MemoryReader reader_;
  std::unique_ptr<AVIOContext, IoFree> io_;
  std::unique_ptr<AVFormatContext, FormatFree> fmt_;
  int stream_ = -1;
};

struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct CodecFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct SwsFree {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

void check_size(int width, int height, const VideoLimits& limits, const char* what) {
  if (width <= 0 || height <= 0) fail(what, " has no frame size");
  const uint64_t pixels = static_cast<uint64_t>(width) * static_cast<uint64_t>(height);
  if (pixels > limits.max_pixels)
    fail(what, " is ", width, "x", height, " = ", pixels, " pixels per frame, at most ",
         limits.max_pixels);
}

VideoInfo probe_file(std::span<const uint8_t> bytes, const VideoLimits& limits) {
  Demuxer d(bytes, limits);
  const AVCodecParameters* par = d.stream()->codecpar;
  VideoInfo info;
  check_size(par->width, par->height, limits, "the video");
  info.width = static_cast<uint32_t>(par->width);
  info.height = static_cast<uint32_t>(par->height);
  info.container = d.fmt()->iformat->name;
  const AVCodecDescriptor* desc = avcodec_descriptor_get(par->codec_id);
  info.codec = desc ? desc->name : "unknown";
  AVRational rate = d.stream()->avg_frame_rate;
  if (rate.num <= 0 || rate.den <= 0) rate = d.stream()->r_frame_rate;
  if (rate.num <= 0 || rate.den <= 0) fail("the video stream has no frame rate");
  info.fps = av_q2d(rate);
  if (!(info.fps > 0) || !std::isfinite(info.fps) || info.fps > 1000)
    fail("the video stream's frame rate ", info.fps, " is not in (0, 1000] frames per second");
  // Count the stream's packets (one per frame for the allowed codecs); stop past the caps.
  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  IRIS_CHECK(pkt) << "out of memory for a video packet";
  const double frame_cap = std::min<double>(limits.max_frames, std::floor(limits.max_seconds * info.fps));
  int frames = 0;
  for (;;) {
    const int err = av_read_frame(d.fmt(), pkt.get());
    if (err == AVERROR_EOF) break;
    if (err < 0) {
      // A damaged tail: what came before still counts when decoding reaches it; a file whose
      // first packet is unreadable has no frames.
      break;
    }
    if (pkt->stream_index == d.index()) ++frames;
    av_packet_unref(pkt.get());
    if (frames > frame_cap) break;
  }
  if (frames == 0) fail("the video stream holds no frames");
  info.frames = frames;
  info.seconds = frames / info.fps;
  if (frames > limits.max_frames)
    fail("the video has more than ", limits.max_frames, " frames, at most ", limits.max_frames);
  if (info.seconds > limits.max_seconds)
    fail("the video lasts more than ", limits.max_seconds, " s (", frames, "+ frames at ", info.fps,
         " fps), at most ", limits.max_seconds, " s");
  return info;
}

void decode_file(std::span<const uint8_t> bytes, const VideoLimits& limits, const VideoInfo& info,
                 std::span<const int> indices, const std::function<void(const DecodedImage&)>& keep) {
  IRIS_CHECK(!indices.empty() && std::is_sorted(indices.begin(), indices.end()) && indices.front() >= 0 &&
             indices.back() < info.frames)
      << "frame indices must ascend within the video's " << info.frames << " frames";
  Demuxer d(bytes, limits);
  const AVCodecParameters* par = d.stream()->codecpar;
  if (par->width != static_cast<int>(info.width) || par->height != static_cast<int>(info.height))
    fail("the video's header changed between reads");
  const AVCodec* codec = avcodec_find_decoder(par->codec_id);
  if (!codec) {
    const AVCodecDescriptor* desc = avcodec_descriptor_get(par->codec_id);
    fail("no decoder for the video codec '", desc ? desc->name : "unknown", "'");
  }
  std::unique_ptr<AVCodecContext, CodecFree> ctx(avcodec_alloc_context3(codec));
  IRIS_CHECK(ctx) << "out of memory for a video decoder";
  if (avcodec_parameters_to_context(ctx.get(), par) < 0) fail("unusable video codec parameters");
  // The decoder refuses frames beyond a pixel cap before allocating them, whatever a later
  // packet claims (each decoded frame must then match the header's size, itself within
  // limits.max_pixels). Not below 16 Mpx: some decoders (MPEG-4 Part 2) check padded internal
  // buffers against it and fail on small frames under a tight cap. One thread keeps the
  // decode pool's sizing honest.
  ctx->max_pixels = static_cast<int64_t>(std::min<uint64_t>(std::max<uint64_t>(limits.max_pixels, 1u << 24), INT64_MAX));
  ctx->thread_count = 1;
  AVDictionary* opts = nullptr;
  av_dict_set(&opts, "codec_whitelist", kDecoders, 0);
  const int open_err = avcodec_open2(ctx.get(), codec, &opts);
  av_dict_free(&opts);
  if (open_err < 0)
    fail("cannot decode the video codec '", codec->name, "': ", av_message(open_err));

  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  IRIS_CHECK(pkt && frame) << "out of memory for video decoding";
  std::unique_ptr<SwsContext, SwsFree> sws;
  size_t next = 0;  // the next index in `indices` to keep
  int decoded = 0;
  std::string damage;  // why decoding stopped early, for the error

  auto take_frames = [&]() -> bool {  // false once every wanted frame is in
    for (;;) {
      const int err = avcodec_receive_frame(ctx.get(), frame.get());
      if (err == AVERROR(EAGAIN) || err == AVERROR_EOF) return true;
      if (err < 0) {
        damage = av_message(err);
        return false;
      }
      const int n = decoded++;
      if (frame->width != static_cast<int>(info.width) || frame->height != static_cast<int>(info.height))
        fail("video frame ", n, " is ", frame->width, "x", frame->height, ", the stream is ", info.width,
             "x", info.height);
      if (next < indices.size() && indices[next] == n) {
        sws.reset(sws_getCachedContext(sws.release(), frame->width, frame->height,
                                       static_cast<AVPixelFormat>(frame->format), frame->width,
                                       frame->height, AV_PIX_FMT_RGB24, SWS_BICUBIC, nullptr, nullptr,
                                       nullptr));
        if (!sws) fail("video frame ", n, " has a pixel format that cannot be converted to RGB");
        DecodedImage img;
        img.width = info.width;
        img.height = info.height;
        img.channels = 3;
        img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
        uint8_t* dst[4] = {img.pixels.data(), nullptr, nullptr, nullptr};
        int stride[4] = {static_cast<int>(img.width) * 3, 0, 0, 0};
        sws_scale(sws.get(), frame->data, frame->linesize, 0, frame->height, dst, stride);
        // Several kept indices may name one frame (a clip shorter than the samples).
        while (next < indices.size() && indices[next] == n) {
          keep(img);
          ++next;
        }
      }
      av_frame_unref(frame.get());
      if (next == indices.size()) return false;
    }
  };

  bool more = true;
  while (more) {
    const int err = av_read_frame(d.fmt(), pkt.get());
    if (err < 0) {
      if (err != AVERROR_EOF) damage = av_message(err);
      break;
    }
    if (pkt->stream_index == d.index()) {
      const int s = avcodec_send_packet(ctx.get(), pkt.get());
      if (s < 0 && s != AVERROR(EAGAIN)) {
        av_packet_unref(pkt.get());
        damage = av_message(s);
        break;
      }
      more = take_frames();
    }
    av_packet_unref(pkt.get());
  }
  if (next < indices.size() && damage.empty()) {  // drain the decoder's delayed frames
    avcodec_send_packet(ctx.get(), nullptr);
    take_frames();
  }
  if (next < indices.size())
    fail("the video file is corrupt or truncated: ", decoded, " of its ", info.frames,
         " frames decoded, frame ", indices[next], " is needed", damage.empty() ? "" : " (", damage,
         damage.empty() ? "" : ")");
}

}  // namespace
}  // namespace iris::image


namespace {

iris::image::VideoLimits limits_of(const IrisVideoLimits* l) {
  iris::image::VideoLimits v;
  v.max_pixels = l->max_pixels;
  v.max_frames = l->max_frames;
  v.max_seconds = l->max_seconds;
  v.max_bytes = l->max_bytes;
  return v;
}

void copy_text(const std::string& from, char* to, size_t size) {
  if (!to || size == 0) return;
  const size_t n = std::min(from.size(), size - 1);
  std::memcpy(to, from.data(), n);
  to[n] = '\0';
}

// Runs fn; an exception becomes the message in `err` and a non-zero return.
template <class Fn>
int guarded(char* err, size_t err_size, Fn&& fn) {
  try {
    fn();
    return 0;
  } catch (const std::exception& e) {
    copy_text(e.what(), err, err_size);
  } catch (...) {
    copy_text("video decoding failed", err, err_size);
  }
  return 1;
}

}  // namespace

extern "C" {

IRIS_VIDEO_EXPORT int iris_video_abi_version() { return IRIS_VIDEO_ABI_VERSION; }

IRIS_VIDEO_EXPORT int iris_video_probe(const uint8_t* data, size_t size, const IrisVideoLimits* limits,
                                       IrisVideoInfo* info, char* err, size_t err_size) {
  return guarded(err, err_size, [&] {
    const iris::image::VideoInfo v = iris::image::probe_file(std::span<const uint8_t>(data, size), limits_of(limits));
    info->width = v.width;
    info->height = v.height;
    info->frames = v.frames;
    info->fps = v.fps;
    info->seconds = v.seconds;
    copy_text(v.container, info->container, sizeof(info->container));
    copy_text(v.codec, info->codec, sizeof(info->codec));
  });
}

IRIS_VIDEO_EXPORT int iris_video_decode(const uint8_t* data, size_t size, const IrisVideoLimits* limits,
                                        const IrisVideoInfo* info, const int* indices, size_t count,
                                        IrisVideoFrameFn on_frame, void* ctx, char* err,
                                        size_t err_size) {
  return guarded(err, err_size, [&] {
    iris::image::VideoInfo v;
    v.width = info->width;
    v.height = info->height;
    v.frames = info->frames;
    v.fps = info->fps;
    v.seconds = info->seconds;
    size_t k = 0;
    iris::image::decode_file(std::span<const uint8_t>(data, size), limits_of(limits), v,
                             std::span<const int>(indices, count),
                        [&](const iris::image::DecodedImage& img) {
                          if (on_frame(ctx, k++, img.pixels.data(), img.pixels.size()) != 0)
                            iris::fail("the video frame could not be kept (out of memory)");
                        });
  });
}

}  // extern "C"
