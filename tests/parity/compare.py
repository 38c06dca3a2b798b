"""Comparison of log-probabilities with a reference, shared by the parity checkers."""
import math


def max_logprob_diff(got, ref):
    """The largest |got - ref| over two log-prob lists; infinity when the counts differ or
    any value is not finite, so a NaN or a missing entry can never pass a tolerance."""
    if len(got) != len(ref) or not got:
        return math.inf
    diff = 0.0
    for x, y in zip(got, ref):
        if not (math.isfinite(x) and math.isfinite(y)):
            return math.inf
        diff = max(diff, abs(x - y))
    return diff
