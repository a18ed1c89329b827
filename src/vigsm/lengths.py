"""Length statistics: percentiles of a list of lengths, as flat metric keys. A leaf module (standard library
only), so that train, which reports its token lengths, does not depend on data loading or answer parsing."""

from __future__ import annotations

from statistics import quantiles


def token_length_stats(lengths: list[int], prefix: str) -> dict[str, float]:
    """Percentiles (50/90/99) and maximum of a list of lengths, as flat keys."""
    if not lengths:
        return {}
    s = sorted(lengths)
    p = quantiles(s, n=100, method="inclusive") if len(s) > 1 else [s[0]] * 99
    return {f"{prefix}_p50": p[49], f"{prefix}_p90": p[89], f"{prefix}_p99": p[98], f"{prefix}_max": s[-1]}
