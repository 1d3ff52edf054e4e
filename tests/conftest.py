"""The whole test session's environment, set before any test module is imported."""

from __future__ import annotations

import os

# Haystack sends usage telemetry from each Pipeline.run unless told not to (it reads the
# variable when it is imported): the tests, and the docs' examples, stay on loopback.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")
