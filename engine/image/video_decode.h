// Video files for Qwen2.5-VL: read a container's header and count its frames (probe_video),
// then decode chosen frames to RGB (decode_video_frames), with FFmpeg's libavformat,
// libavcodec and libswscale. An optional dependency, kept out of the server binary: the
// decoder is the module libiris_video.so (video_module.cpp, built when FFmpeg is found),
// loaded on first use from next to the executable (or ../lib, or IRIS_VIDEO_MODULE);
// without it video_decoder_available() is false and every file is refused, saying so.
//
// Untrusted input, decoded in memory from the request's bytes (a custom AVIOContext; no
// temporary files, no other files or network resources opened: only the MP4/QuickTime,
// Matroska/WebM and AVI demuxers and a list of common video decoders are allowed). Limits
// are checked on the header before any frame is decoded, and the decoder itself is told
// the per-frame pixel cap, so a file claiming huge dimensions costs a header parse, never
// its claimed size. Every failure is an iris::Error whose message names the problem.
//
// Pixels: each frame is converted to 8-bit RGB by libswscale with bicubic flags, as the
// ffmpeg command line does when it writes a frame to PNG, so a frame decoded here equals
// the one `ffmpeg -i file -vf select=... frame%d.png` extracts.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/image/decode.h"

namespace iris::image {

// Whether this build decodes video files (FFmpeg was found when it was configured).
bool video_decoder_available();

struct VideoLimits {
  uint64_t max_pixels = 89'478'485;  // width * height of a frame
  int max_frames = 18'000;           // frames in the file (all are decoded to reach the sampled)
  double max_seconds = 600;          // duration: frames / frame rate
  size_t max_bytes = size_t{256} << 20;
};

// What the container says, plus the exact number of the video stream's frames (counted by
// demuxing every packet of the stream, without decoding).
struct VideoInfo {
  uint32_t width = 0, height = 0;
  int frames = 0;      // frames of the video stream
  double fps = 0;      // the stream's average frame rate
  double seconds = 0;  // frames / fps
  std::string container, codec;
};

// Throws iris::Error for data no allowed demuxer recognizes, no video stream, a frame size
// or frame count or duration beyond `limits`, or no frame rate.
VideoInfo probe_video(std::span<const uint8_t> bytes, const VideoLimits& limits);

// Decodes the file and keeps the frames (in display order) at `indices` (ascending, each
// below info.frames), as 3-channel RGB. Throws iris::Error when a frame cannot be decoded,
// changes size, or the stream ends before the last index (a corrupt or truncated file).
std::vector<DecodedImage> decode_video_frames(std::span<const uint8_t> bytes, const VideoLimits& limits,
                                              const VideoInfo& info, std::span<const int> indices);

}  // namespace iris::image
