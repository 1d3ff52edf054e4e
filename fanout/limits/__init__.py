"""Rate limits: token buckets, an adaptive pace per limit, the paced FIFO ``Limiter``,
and the ``QuotaLedger`` that shares one limit among many workers by leases."""

from fanout.limits._adaptive import AdaptiveRate
from fanout.limits._bucket import TokenBucket
from fanout.limits._headers import RateLimitHeaders, parse_duration_s
from fanout.limits._limiter import LeaseReport, Limiter, LimiterState, Permit
from fanout.limits._quota import Lease, QuotaLedger

__all__ = [
    "AdaptiveRate",
    "Lease",
    "LeaseReport",
    "Limiter",
    "LimiterState",
    "Permit",
    "QuotaLedger",
    "RateLimitHeaders",
    "TokenBucket",
    "parse_duration_s",
]
