"""fanout: a distributed high-fan-out execution engine for LLM and tool calls.

Build a :class:`DAG` of llm and tool steps, then run it with an :class:`Engine`::

    from fanout import DAG, Engine

    dag = DAG("classify")
    text = dag.input("text")
    dag.output(label=dag.llm("fast", "Sentiment of: {text}", max_tokens=5))

    async with Engine.from_config("fanout.toml") as engine:
        result = await engine.run(dag, {"text": "great product"}, budget_usd=0.01)
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.budget import Budget
    from fanout.clock import Clock, SystemClock
    from fanout.config import Config, ModelConfig, load_config, parse_config
    from fanout.dag import DAG, INDEX, ITEM, Ref, Tool, mcp
    from fanout.errors import (
        BudgetExceeded,
        ConfigError,
        DeadlineExceeded,
        FanoutError,
        GuardRejected,
        InputRefused,
        InvalidResponse,
        MaxStepsExceeded,
        NodeFailed,
        OutputValidationError,
        ProviderConnectionError,
        ProviderError,
        ProviderHTTPError,
        ProviderOutage,
        ProviderTimeout,
        RateLimited,
        RequestTooLarge,
        RunError,
        SessionBusy,
        StreamCut,
        TemplateError,
        ToolError,
        UpstreamFailed,
    )
    from fanout.providers import Provider
    from fanout.run import Engine, NodeResult, RunResult, TokenEvent
    from fanout.store import SessionStore, SQLiteStore
    from fanout.types import (
        ChatRequest,
        ChatResponse,
        ContentPart,
        Message,
        NodeStatus,
        RunStatus,
        ToolCall,
        ToolSpec,
        Usage,
    )

# What ``from fanout import X`` gives, imported on first use (PEP 562): ``import
# fanout.trace`` (the live exporter's process) or ``fanout --help`` need not load the
# engine, pydantic's models and the providers (~0.6 s of CPU) to reach a submodule.
_LAZY: dict[str, str] = {
    "Budget": "fanout.budget",
    "BudgetExceeded": "fanout.errors",
    "ChatRequest": "fanout.types",
    "ChatResponse": "fanout.types",
    "Clock": "fanout.clock",
    "Config": "fanout.config",
    "ConfigError": "fanout.errors",
    "ContentPart": "fanout.types",
    "DAG": "fanout.dag",
    "DeadlineExceeded": "fanout.errors",
    "Engine": "fanout.run",
    "FanoutError": "fanout.errors",
    "GuardRejected": "fanout.errors",
    "INDEX": "fanout.dag",
    "InputRefused": "fanout.errors",
    "InvalidResponse": "fanout.errors",
    "ITEM": "fanout.dag",
    "load_config": "fanout.config",
    "MaxStepsExceeded": "fanout.errors",
    "mcp": "fanout.dag",
    "Message": "fanout.types",
    "ModelConfig": "fanout.config",
    "NodeFailed": "fanout.errors",
    "NodeResult": "fanout.run",
    "NodeStatus": "fanout.types",
    "OutputValidationError": "fanout.errors",
    "parse_config": "fanout.config",
    "Provider": "fanout.providers",
    "ProviderConnectionError": "fanout.errors",
    "ProviderError": "fanout.errors",
    "ProviderHTTPError": "fanout.errors",
    "ProviderOutage": "fanout.errors",
    "ProviderTimeout": "fanout.errors",
    "RateLimited": "fanout.errors",
    "Ref": "fanout.dag",
    "RequestTooLarge": "fanout.errors",
    "RunError": "fanout.errors",
    "RunResult": "fanout.run",
    "RunStatus": "fanout.types",
    "SessionBusy": "fanout.errors",
    "SessionStore": "fanout.store",
    "SQLiteStore": "fanout.store",
    "StreamCut": "fanout.errors",
    "SystemClock": "fanout.clock",
    "TemplateError": "fanout.errors",
    "TokenEvent": "fanout.run",
    "Tool": "fanout.dag",
    "ToolCall": "fanout.types",
    "ToolError": "fanout.errors",
    "ToolSpec": "fanout.types",
    "UpstreamFailed": "fanout.errors",
    "Usage": "fanout.types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fanout' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "DAG",
    "INDEX",
    "ITEM",
    "Budget",
    "BudgetExceeded",
    "ChatRequest",
    "ChatResponse",
    "Clock",
    "Config",
    "ConfigError",
    "ContentPart",
    "DeadlineExceeded",
    "Engine",
    "FanoutError",
    "GuardRejected",
    "InputRefused",
    "InvalidResponse",
    "MaxStepsExceeded",
    "Message",
    "ModelConfig",
    "NodeFailed",
    "NodeResult",
    "NodeStatus",
    "OutputValidationError",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderOutage",
    "ProviderTimeout",
    "RateLimited",
    "Ref",
    "RequestTooLarge",
    "RunError",
    "RunResult",
    "RunStatus",
    "SQLiteStore",
    "SessionBusy",
    "SessionStore",
    "StreamCut",
    "SystemClock",
    "TemplateError",
    "TokenEvent",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "UpstreamFailed",
    "Usage",
    "__version__",
    "load_config",
    "mcp",
    "parse_config",
]
