// engine/image/video_decode: frames decoded in memory equal, pixel for pixel, the PNGs the
// ffmpeg command line extracts at the same indices (MP4/MPEG-4, WebM/VP8, AVI/MJPEG); the
// header's frame count and rate; each cap refused before decoding; truncated and zeroed files
// refused with a message; a header claiming a huge frame never decoded at that size. The clips
// are made with the ffmpeg command line; without it (or in a build without FFmpeg) the cases
// only check that files are refused with the build's message.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/core/check.h"
#include "engine/image/decode.h"
#include "engine/image/video_decode.h"

namespace fs = std::filesystem;
using namespace iris;

namespace {

std::vector<uint8_t> read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

bool have_ffmpeg() { return std::system("ffmpeg -hide_banner -version > /dev/null 2>&1") == 0; }

fs::path scratch() {
  fs::path d = fs::temp_directory_path() / ("iris_video_decode_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// A 3 s, 10 fps, 64x48 moving test pattern in `codec_args`.
bool make_clip(const fs::path& out, const std::string& codec_args, const std::string& size = "64x48",
               int seconds = 3) {
  const std::string cmd = "ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc=size=" + size +
                          ":rate=10:duration=" + std::to_string(seconds) + " " + codec_args + " '" +
                          out.string() + "'";
  return std::system(cmd.c_str()) == 0;
}

}  // namespace

// A build with the decoder module (IRIS_EXPECT_VIDEO) must load it and have the ffmpeg command
// line (scripts/install-deps.sh installs it); one without must refuse files by name.
bool video_testable() {
#ifdef IRIS_EXPECT_VIDEO
  REQUIRE(image::video_decoder_available());
  REQUIRE(have_ffmpeg());
  return true;
#else
  REQUIRE_FALSE(image::video_decoder_available());
  const std::vector<uint8_t> junk(64, 0);
  REQUIRE_THROWS_WITH(image::probe_video(junk, {}), Catch::Contains("no video decoder"));
  return false;
#endif
}

TEST_CASE("video files decode to the frames the ffmpeg command line extracts", "[video]") {
  if (!video_testable()) return;
  const fs::path dir = scratch();
  const std::vector<int> indices = {0, 5, 10, 15, 20, 25, 29};
  struct Clip {
    const char* name;
    const char* args;
  };
  for (const Clip& c : {Clip{"clip.mp4", "-c:v mpeg4 -pix_fmt yuv420p -q:v 4"},
                        Clip{"clip.webm", "-c:v libvpx -pix_fmt yuv420p -b:v 200k"},
                        Clip{"clip.avi", "-c:v mjpeg -pix_fmt yuvj420p"}}) {
    SECTION(c.name) {
      const fs::path clip = dir / c.name;
      if (!make_clip(clip, c.args)) {
        WARN("this ffmpeg cannot write " << c.name);
        continue;
      }
      const std::vector<uint8_t> bytes = read_file(clip);
      const image::VideoInfo info = image::probe_video(bytes, {});
      CHECK(info.width == 64);
      CHECK(info.height == 48);
      CHECK(info.frames == 30);
      CHECK(info.fps == Approx(10.0));
      CHECK(info.seconds == Approx(3.0));
      const std::vector<image::DecodedImage> frames = image::decode_video_frames(bytes, {}, info, indices);
      REQUIRE(frames.size() == indices.size());
      const fs::path pngs = dir / (std::string(c.name) + "_frames");
      fs::create_directories(pngs);
      std::string select;
      for (int i : indices) select += (select.empty() ? "" : "+") + std::string("eq(n\\,") + std::to_string(i) + ")";
      const std::string cmd = "ffmpeg -hide_banner -loglevel error -y -i '" + clip.string() + "' -vf \"select='" +
                              select + "'\" -fps_mode passthrough '" + (pngs / "f%03d.png").string() + "'";
      REQUIRE(std::system(cmd.c_str()) == 0);
      for (size_t k = 0; k < indices.size(); ++k) {
        char name[32];
        std::snprintf(name, sizeof(name), "f%03zu.png", k + 1);
        const image::DecodedImage want = image::decode_rgb(read_file(pngs / name));
        INFO(c.name << " frame " << indices[k]);
        REQUIRE(want.width == frames[k].width);
        REQUIRE(want.height == frames[k].height);
        REQUIRE(frames[k].channels == 3);
        CHECK(std::memcmp(want.pixels.data(), frames[k].pixels.data(), want.pixels.size()) == 0);
      }
      // A frame index repeated (a clip shorter than its samples) is kept twice.
      const std::vector<int> twice = {3, 3};
      const auto dup = image::decode_video_frames(bytes, {}, info, twice);
      REQUIRE(dup.size() == 2);
      CHECK(dup[0].pixels == dup[1].pixels);
    }
  }
  fs::remove_all(dir);
}

TEST_CASE("video files beyond the caps or damaged are refused before decoding", "[video]") {
  if (!video_testable()) return;
  const fs::path dir = scratch();
  const fs::path clip = dir / "caps.mp4";
  REQUIRE(make_clip(clip, "-c:v mpeg4 -pix_fmt yuv420p"));
  const std::vector<uint8_t> bytes = read_file(clip);

  image::VideoLimits pixels;
  pixels.max_pixels = 64 * 48 - 1;
  CHECK_THROWS_WITH(image::probe_video(bytes, pixels), Catch::Contains("pixels per frame, at most 3071"));
  image::VideoLimits frames;
  frames.max_frames = 29;
  CHECK_THROWS_WITH(image::probe_video(bytes, frames), Catch::Contains("more than 29 frames"));
  image::VideoLimits seconds;
  seconds.max_seconds = 2.5;
  CHECK_THROWS_WITH(image::probe_video(bytes, seconds), Catch::Contains("lasts more than 2.5 s"));
  image::VideoLimits small;
  small.max_bytes = bytes.size() - 1;
  CHECK_THROWS_WITH(image::probe_video(bytes, small), Catch::Contains("bytes, at most"));

  // Truncated (the index is at the end), random bytes, an empty file.
  const std::vector<uint8_t> half(bytes.begin(), bytes.begin() + static_cast<long>(bytes.size() / 2));
  CHECK_THROWS_WITH(image::probe_video(half, {}), Catch::Contains("not a video file this server reads"));
  std::vector<uint8_t> noise(4096);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
  CHECK_THROWS(image::probe_video(noise, {}));
  CHECK_THROWS_WITH(image::probe_video(std::vector<uint8_t>{}, {}), Catch::Contains("empty"));

  // An AVI of MJPEG frames, zeroed behind the chunk headers: it probes, but no frame decodes.
  const fs::path avi = dir / "zero.avi";
  REQUIRE(make_clip(avi, "-c:v mjpeg -pix_fmt yuvj420p"));
  std::vector<uint8_t> z = read_file(avi);
  const std::string s(z.begin(), z.end());
  for (size_t at = s.find("00dc", s.find("movi")); at != std::string::npos && at + 8 <= z.size();) {
    uint32_t n = 0;
    std::memcpy(&n, &z[at + 4], 4);
    const size_t end = std::min(z.size(), at + 8 + n);
    std::fill(z.begin() + static_cast<long>(at + 8), z.begin() + static_cast<long>(end), 0);
    at = s.find("00dc", end);
  }
  const image::VideoInfo zi = image::probe_video(z, {});
  const std::vector<int> first = {0};
  CHECK_THROWS_WITH(image::decode_video_frames(z, {}, zi, first), Catch::Contains("corrupt or truncated"));

  // The AVI's headers claiming 100000x100000: never decoded at that size (the stream's size
  // comes from the frames themselves, or the file is refused).
  std::vector<uint8_t> huge = read_file(avi);
  const std::string hs(huge.begin(), huge.end());
  const size_t strf = hs.find("strf");
  REQUIRE(strf != std::string::npos);
  const int32_t big = 100000;
  std::memcpy(&huge[strf + 12], &big, 4);
  std::memcpy(&huge[strf + 16], &big, 4);
  try {
    const image::VideoInfo hi = image::probe_video(huge, {});
    CHECK(static_cast<uint64_t>(hi.width) * hi.height <= 64 * 48);
    const auto got = image::decode_video_frames(huge, {}, hi, first);
    CHECK(got.at(0).pixels.size() == size_t{64} * 48 * 3);
  } catch (const Error& e) {
    SUCCEED(std::string("refused: ") + e.what());
  }
  fs::remove_all(dir);
}
