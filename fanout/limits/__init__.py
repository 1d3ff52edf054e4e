"""Rate limits: token buckets, an adaptive pace per limit, and the paced FIFO ``Limiter``."""

from fanout.limits._adaptive import AdaptiveRate
from fanout.limits._bucket import TokenBucket
from fanout.limits._headers import RateLimitHeaders, parse_duration_s
from fanout.limits._limiter import Limiter, LimiterState, Permit

__all__ = [
    "AdaptiveRate",
    "Limiter",
    "LimiterState",
    "Permit",
    "RateLimitHeaders",
    "TokenBucket",
    "parse_duration_s",
]
