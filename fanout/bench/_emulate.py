"""``--emulate``: parse an emulated provider spec and run ``fanout sim-server`` for a bench.

Spec: comma-separated ``key=value`` pairs, e.g.
``rpm=3000,tpm=1000000,latency=lognormal:200ms:0.4,errors=0.01``:

- ``rpm``, ``tpm``: the provider's limits per key and model (default: unlimited);
- ``latency``: ``200ms`` (fixed) or ``lognormal:MEDIAN:SIGMA``;
- ``errors``: share of calls answered 500; ``burst``: bucket size (``1s``);
- ``per_token``: latency added per output token (``2ms``).
"""

from __future__ import annotations

import contextlib
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import httpx

from fanout.bench._arrivals import parse_duration
from fanout.config import Config, parse_config
from fanout.errors import ConfigError

__all__ = ["EmulateSpec", "EmulatedProvider", "emulated_config", "parse_emulate", "run_emulator"]

_KEYS = "rpm, tpm, latency, errors, burst, per_token"
_EXAMPLE = "rpm=3000,tpm=1000000,latency=lognormal:200ms:0.4,errors=0.01"


@dataclass(frozen=True, slots=True)
class EmulateSpec:
    """What the emulated provider allows and how fast it answers."""

    text: str
    requests_per_min: float | None = None
    tokens_per_min: float | None = None
    latency_ms: float = 0.0
    jitter_sigma: float = 0.0
    error_rate: float = 0.0
    burst_s: float = 1.0
    latency_per_token_ms: float = 0.0

    @property
    def mean_latency_ms(self) -> float:
        """The mean of the lognormal latency (median x exp(sigma^2 / 2))."""
        return self.latency_ms * math.exp(self.jitter_sigma**2 / 2)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def server_args(self) -> list[str]:
        args = [
            "--latency-ms",
            str(self.latency_ms),
            "--jitter-sigma",
            str(self.jitter_sigma),
            "--error-rate",
            str(self.error_rate),
            "--burst-s",
            str(self.burst_s),
            "--latency-per-token-ms",
            str(self.latency_per_token_ms),
        ]
        if self.requests_per_min is not None:
            args += ["--rpm", str(self.requests_per_min)]
        if self.tokens_per_min is not None:
            args += ["--tpm", str(self.tokens_per_min)]
        return args


def _bad(spec: str, why: str) -> ConfigError:
    return ConfigError(f"--emulate {spec!r}: {why}; keys: {_KEYS} (e.g. {_EXAMPLE})")


def _number(spec: str, key: str, text: str, *, low: float, high: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _bad(spec, f"{key}={text!r} is not a number") from None
    if not low <= value <= high:
        raise _bad(spec, f"{key}={text} must be within [{low:g}, {high:g}]")
    return value


def _ms(spec: str, key: str, text: str) -> float:
    try:
        return parse_duration(text, what=key) * 1000
    except ConfigError:
        if text.strip() in ("0", "0ms", "0s"):
            return 0.0
        raise _bad(spec, f"{key}={text!r} is not a duration (e.g. 200ms)") from None


def parse_emulate(spec: str) -> EmulateSpec:
    """Parse an ``--emulate`` spec; a bad one raises :class:`ConfigError` naming the keys."""
    values: dict[str, float | None] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq or not value.strip():
            raise _bad(spec, f"{part!r} is not key=value")
        if key in ("rpm", "tpm"):
            values["requests_per_min" if key == "rpm" else "tokens_per_min"] = _number(
                spec, key, value, low=1e-9
            )
        elif key == "latency":
            kind, _, rest = value.partition(":")
            if kind == "lognormal":
                median, colon, sigma = rest.partition(":")
                if not colon:
                    raise _bad(spec, "latency=lognormal:MEDIAN:SIGMA, e.g. lognormal:200ms:0.4")
                values["latency_ms"] = _ms(spec, "latency", median)
                values["jitter_sigma"] = _number(spec, "sigma", sigma, low=0, high=3)
            else:
                values["latency_ms"] = _ms(spec, "latency", value)
        elif key == "errors":
            values["error_rate"] = _number(spec, key, value, low=0, high=1)
        elif key == "burst":
            values["burst_s"] = _ms(spec, key, value) / 1000
        elif key == "per_token":
            values["latency_per_token_ms"] = _ms(spec, key, value)
        else:
            raise _bad(spec, f"unknown key {key!r}")
    return EmulateSpec(text=spec, **values)  # type: ignore[arg-type]


def emulated_config(config: Config, base_url: str) -> Config:
    """``config`` with every provider pointed at the emulator (an OpenAI-compatible
    endpoint), keeping its limits, concurrency, retry and circuit settings."""
    data = config.model_dump()
    keep = (
        "requests_per_min",
        "tokens_per_min",
        "max_concurrency",
        "timeout_s",
        "adaptive",
        "retry",
        "circuit",
    )
    data["providers"] = {
        name: {"kind": "openai", "base_url": base_url, **{k: p[k] for k in keep}}
        for name, p in data["providers"].items()
    }
    return parse_config(data, source="emulated config")


class EmulatedProvider:
    """A running ``fanout sim-server``: its URL and its own counts."""

    def __init__(self, root: str, spec: EmulateSpec) -> None:
        self.root = root
        self.spec = spec

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def stats(self) -> dict[str, object]:
        data: dict[str, object] = httpx.get(f"{self.root}/stats", timeout=10).json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.root}/stats/reset", timeout=10).raise_for_status()


@contextlib.contextmanager
def run_emulator(spec: EmulateSpec) -> Iterator[EmulatedProvider]:
    """``fanout sim-server`` in its own process (as a real provider is: not sharing the
    bench's CPU and GIL) on a free loopback port, for the length of the block."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)]
    proc = subprocess.Popen([*command, *spec.server_args()], stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{root}/stats", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise ConfigError(
                        f"--emulate: fanout sim-server did not start on {root}"
                    ) from None
                time.sleep(0.05)
        yield EmulatedProvider(root, spec)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
