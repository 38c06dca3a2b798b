// M-RoPE positions (Qwen2.5-VL): each token has a temporal, a height and a width position.
// Text tokens have three equal positions that continue from the largest position before them;
// a media span's tokens take (t, row, column) of its grid, offset by the position the span
// starts at, so the text after an image resumes at that offset + max(grid extent). This is
// transformers' get_rope_index, computed here from the prompt's media spans (each span is one
// run of image or video placeholder tokens) instead of by scanning for the placeholder ids.
// Tokens past the prompt (decoding) use their index + `delta` in all three rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace iris {

// One media span as M-RoPE sees it: where its placeholder tokens are and its grid in
// language-model tokens (frames or temporal patches, rows and columns after the merger).
struct MropeSpan {
  int32_t position = 0;  // first placeholder token
  int32_t grid_t = 1, grid_h = 1, grid_w = 1;  // grid_t * grid_h * grid_w placeholder tokens
  // Temporal position of grid frame k: k * temporal_step, truncated to an integer
  // (second_per_grid_t * tokens_per_second for a video, 0 for an image).
  double temporal_step = 0;
};

struct MropePositions {
  std::vector<int32_t> prompt;  // [prompt_len, 3]: (temporal, height, width) per token
  int32_t delta = 0;            // decode position = token index + delta

  int32_t prompt_len() const { return static_cast<int32_t>(prompt.size() / 3); }
  // The three positions of token index p of the sequence.
  void at(int32_t p, int32_t out[3]) const {
    if (p < prompt_len()) {
      for (int j = 0; j < 3; ++j) out[j] = prompt[static_cast<size_t>(p) * 3 + j];
    } else {
      for (int j = 0; j < 3; ++j) out[j] = p + delta;
    }
  }
};

// Positions of a prompt of prompt_len tokens with the given spans (sorted, non-overlapping,
// inside the prompt). Throws iris::Error for spans that do not fit.
MropePositions mrope_positions(int32_t prompt_len, const std::vector<MropeSpan>& spans);

}  // namespace iris
