// The GPU tests' comparison helpers, checked on the host (no device needed): a wrong row
// must fail the row-wise comparison even where the whole-tensor error stays small.
#include <catch2/catch.hpp>
#include <cmath>

#include "tests/gpu/gpu_test_util.h"

using namespace iris::gpu_test;

TEST_CASE("row-wise comparison finds one wrong row among thousands", "[compare]") {
  // 4,000 attention rows of 128 values; row 2,917 (a long-context row, say) is 10% off.
  const int64_t rows = 4000, d = 128;
  std::vector<float> ref = random_bf16_values(rows * d, 7), got = ref;
  for (int64_t i = 2917 * d; i < 2918 * d; ++i) got[i] *= 1.1f;
  const ErrorStats whole = compare(ref, got);
  CHECK(whole.rel_l2 < 2e-2);  // the whole-tensor bound of the attention tests would pass
  const RowErrors e = row_errors(ref, got, d, 3e-2);
  CHECK(e.over == 1);
  CHECK(e.worst == 2917);
  CHECK(std::abs(e.worst_rel - 0.1) < 1e-3);

  // A NaN row and an all-zero reference row judged on the absolute scale.
  got = ref;
  got[5 * d + 3] = std::nanf("");
  for (int64_t i = 9 * d; i < 10 * d; ++i) ref[i] = 0.0f, got[i] = 1e-9f;
  const RowErrors n = row_errors(ref, got, d, 3e-2);
  CHECK(n.nonfinite == 1);
  CHECK(n.over == 1);
  CHECK(n.worst == 5);

  // Identical tensors: nothing over any bound.
  CHECK(row_errors(ref, ref, d, 0.0).over == 0);
}
