"""fanout: a distributed high-fan-out execution engine for LLM and tool calls.

Build a :class:`DAG` of llm and tool steps, then run it with an :class:`Engine`::

    from fanout import DAG, Engine

    dag = DAG("classify")
    text = dag.input("text")
    dag.output(label=dag.llm("fast", "Sentiment of: {text}", max_tokens=5))

    async with Engine.from_config("fanout.toml") as engine:
        result = await engine.run(dag, {"text": "great product"}, budget_usd=0.01)
"""

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
