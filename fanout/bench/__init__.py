"""Load benchmarks and capacity planning: ``fanout bench`` and ``fanout plan``.

``run_bench`` drives the real engine with open-loop arrivals (poisson, constant,
burst, replay of an earlier job's traces) or N closed-loop clients, against real
providers or an emulated one, and writes ``report.json``, PNG plots and
``report.html``. ``predict`` estimates throughput, wall time, the binding
constraint, latency and cost from a DAG's shape and a config's limits and prices,
without calling a provider; ``compare`` sets a prediction against a bench report.
"""

from fanout.bench._arrivals import ArrivalSpec, parse_arrivals, parse_duration, parse_rate
from fanout.bench._bench import (
    BenchOptions,
    check_inputs,
    default_warmup_s,
    replay_arrivals,
    run_bench,
    sample_inputs,
)
from fanout.bench._check import CheckRow, compare
from fanout.bench._emulate import EmulateSpec, emulated_config, parse_emulate, run_emulator
from fanout.bench._load import Arrival, LoadResult, RequestRecord, generate_load
from fanout.bench._plan import Constraint, Prediction, predict
from fanout.bench._plan_view import print_check, print_prediction
from fanout.bench._report import REPORT_FILE, read_report
from fanout.bench._shape import NodeShape, Shape, measure_shape, shape_from_traces
from fanout.bench._table import print_report

__all__ = [
    "REPORT_FILE",
    "Arrival",
    "ArrivalSpec",
    "BenchOptions",
    "CheckRow",
    "Constraint",
    "EmulateSpec",
    "LoadResult",
    "NodeShape",
    "Prediction",
    "RequestRecord",
    "Shape",
    "check_inputs",
    "compare",
    "default_warmup_s",
    "emulated_config",
    "generate_load",
    "measure_shape",
    "parse_arrivals",
    "parse_duration",
    "parse_emulate",
    "parse_rate",
    "predict",
    "print_check",
    "print_prediction",
    "print_report",
    "read_report",
    "replay_arrivals",
    "run_bench",
    "run_emulator",
    "sample_inputs",
    "shape_from_traces",
]
