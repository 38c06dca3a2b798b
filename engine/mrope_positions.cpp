// M-RoPE position computation (see mrope_positions.h).
#include "engine/mrope_positions.h"

#include <algorithm>

#include "engine/core/check.h"

namespace iris {

MropePositions mrope_positions(int32_t prompt_len, const std::vector<MropeSpan>& spans) {
  IRIS_CHECK(prompt_len >= 0) << "prompt length " << prompt_len;
  MropePositions m;
  m.prompt.resize(static_cast<size_t>(prompt_len) * 3);
  int32_t next = 0;  // the position the next text token takes
  int32_t cursor = 0;
  auto text_until = [&](int32_t end) {
    for (; cursor < end; ++cursor, ++next)
      for (int j = 0; j < 3; ++j) m.prompt[static_cast<size_t>(cursor) * 3 + j] = next;
  };
  for (const MropeSpan& s : spans) {
    const int64_t len = static_cast<int64_t>(s.grid_t) * s.grid_h * s.grid_w;
    IRIS_CHECK(s.grid_t > 0 && s.grid_h > 0 && s.grid_w > 0 && s.position >= cursor &&
               s.position + len <= prompt_len && s.temporal_step >= 0)
        << "media span at " << s.position << " with grid " << s.grid_t << "x" << s.grid_h << "x"
        << s.grid_w << " does not fit the prompt of " << prompt_len << " tokens";
    text_until(s.position);
    const int32_t base = next;
    int32_t max_pos = base;
    for (int32_t t = 0; t < s.grid_t; ++t) {
      const auto tp = static_cast<int32_t>(static_cast<double>(t) * s.temporal_step);
      for (int32_t h = 0; h < s.grid_h; ++h)
        for (int32_t w = 0; w < s.grid_w; ++w, ++cursor) {
          int32_t* p = &m.prompt[static_cast<size_t>(cursor) * 3];
          p[0] = base + tp;
          p[1] = base + h;
          p[2] = base + w;
          max_pos = std::max({max_pos, p[0], p[1], p[2]});
        }
    }
    next = max_pos + 1;
  }
  text_until(prompt_len);
  m.delta = next - prompt_len;
  return m;
}

}  // namespace iris
