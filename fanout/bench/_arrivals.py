"""Arrival specs (``--arrivals``): when requests arrive, open-loop or from N closed-loop clients."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from fanout.errors import ConfigError

__all__ = ["ArrivalSpec", "arrival_offsets", "parse_arrivals", "parse_duration", "parse_rate"]

ArrivalKind = Literal["poisson", "constant", "burst", "closed", "replay"]

_FORMS = (
    "poisson:RATE, constant:RATE (RATE as 50/s or 3000/min), burst:SIZE/PERIOD "
    "(e.g. burst:100/5s), closed:CLIENTS (e.g. closed:16) or replay:TRACES_DIR"
)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|min|m|h))?\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")
_PER_S = {None: 1.0, "s": 1.0, "sec": 1.0, "min": 1 / 60, "m": 1 / 60, "h": 1 / 3600}
_SECONDS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class ArrivalSpec:
    """A parsed ``--arrivals`` spec. ``rate_per_s`` for poisson/constant; ``size`` and
    ``period_s`` for burst; ``clients`` for closed; ``path`` for replay."""

    kind: ArrivalKind
    text: str
    rate_per_s: float | None = None
    size: int | None = None
    period_s: float | None = None
    clients: int | None = None
    path: str | None = None

    @property
    def open_loop(self) -> bool:
        return self.kind != "closed"

    @property
    def offered_per_s(self) -> float | None:
        """The mean arrival rate this spec offers (None: closed loop or replay)."""
        if self.rate_per_s is not None:
            return self.rate_per_s
        if self.size is not None and self.period_s:
            return self.size / self.period_s
        return None


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"--arrivals {spec!r}: {why}; use {_FORMS}")


def parse_duration(text: str, *, what: str = "--duration") -> float:
    """``"60s"``, ``"2m"``, ``"500ms"`` or ``"30"`` (seconds) -> seconds, > 0."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{what} {text!r}: not a duration; write e.g. 60s, 2m or 500ms")
    seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"{what} {text!r}: must be more than zero")
    return seconds


def parse_rate(text: str, *, what: str = "--arrival-rate") -> float:
    """``"50/s"``, ``"3000/min"``, ``"2"`` (per second) -> requests per second, > 0."""
    match = _RATE.match(text)
    rate = float(match.group(1)) * _PER_S[match.group(2)] if match else 0.0
    if rate <= 0:
        raise ConfigError(f"{what} {text!r}: not a rate above zero; write e.g. 50/s or 3000/min")
    return rate


def _rate(spec: str, text: str) -> float:
    match = _RATE.match(text)
    if not match:
        raise _bad(spec, f"{text!r} is not a rate")
    rate = float(match.group(1)) * _PER_S[match.group(2)]
    if rate <= 0:
        raise _bad(spec, "the rate must be more than zero")
    return rate


def parse_arrivals(spec: str) -> ArrivalSpec:
    """Parse an ``--arrivals`` spec; a bad one raises :class:`ConfigError` naming the forms."""
    kind, sep, arg = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not arg.strip():
        raise _bad(spec, "expected KIND:ARGUMENT")
    if kind in ("poisson", "constant"):
        return ArrivalSpec(kind, spec, rate_per_s=_rate(spec, arg))  # type: ignore[arg-type]
    if kind == "burst":
        size_text, slash, period_text = arg.partition("/")
        if not slash or not size_text.strip().isdigit() or int(size_text) < 1:
            raise _bad(spec, "a burst is SIZE/PERIOD with SIZE a whole number >= 1")
        try:
            period = parse_duration(period_text, what="burst period")
        except ConfigError as exc:
            raise _bad(spec, str(exc)) from None
        return ArrivalSpec("burst", spec, size=int(size_text), period_s=period)
    if kind == "closed":
        if not arg.strip().isdigit() or int(arg) < 1:
            raise _bad(spec, "closed:CLIENTS needs a whole number of clients >= 1")
        return ArrivalSpec("closed", spec, clients=int(arg))
    if kind == "replay":
        return ArrivalSpec("replay", spec, path=arg.strip())
    raise _bad(spec, f"unknown kind {kind!r}")


def arrival_offsets(spec: ArrivalSpec, duration_s: float, *, seed: int = 0) -> Iterator[float]:
    """Seconds after the start at which requests arrive, ascending, all < ``duration_s``
    (open-loop kinds except replay, whose times come from the traces)."""
    if spec.kind == "poisson":
        assert spec.rate_per_s is not None
        rng = random.Random(seed)
        t = rng.expovariate(spec.rate_per_s)
        while t < duration_s:
            yield t
            t += rng.expovariate(spec.rate_per_s)
    elif spec.kind == "constant":
        assert spec.rate_per_s is not None
        gap = 1 / spec.rate_per_s
        for i in range(math.ceil(duration_s * spec.rate_per_s)):
            if i * gap < duration_s:
                yield i * gap
    elif spec.kind == "burst":
        assert spec.size is not None and spec.period_s is not None
        t = 0.0
        while t < duration_s:
            for _ in range(spec.size):
                yield t
            t += spec.period_s
    else:
        raise ValueError(f"{spec.kind} arrivals have no generated offsets")
