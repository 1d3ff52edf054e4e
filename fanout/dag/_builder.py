"""``DAG``: the builder users write pipelines with; ``validate`` turns it into a ``Plan``."""

from __future__ import annotations

import inspect
import itertools
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from pydantic import BaseModel

from fanout.dag._guards import make_guards
from fanout.dag._mcp import McpTools
from fanout.dag._nodes import (
    INDEX,
    ITEM,
    Arg,
    EmbedNode,
    InputNode,
    LLMNode,
    MapNode,
    Node,
    OnItemError,
    PromptFn,
    Ref,
    ReviewNode,
    RouteNode,
    ToolNode,
)
from fanout.dag._plan import Plan, build_plan
from fanout.dag._session import HISTORY, STATE, Session, SessionSpec
from fanout.dag._template import Template
from fanout.dag._tools import Tool, make_tool
from fanout.errors import ConfigError

__all__ = ["DAG"]

_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
_tokens = itertools.count(1)
T = TypeVar("T")


class DAG:
    """A pipeline of LLM and tool steps, built from plain functions and prompt templates.

    Each builder method adds a node and returns a :class:`Ref` to its output, which
    later nodes take as arguments. Nothing runs until an ``Engine`` runs the DAG;
    ``validate()`` checks it (cycles, unknown references, template fields, model
    aliases) and is called by the engine before any provider call.

    Example::

        dag = DAG("triage")
        text = dag.input("text")
        parts = dag.tool(split_sentences, text, inline=True)
        scores = dag.map(dag.llm("fast", "Sentiment of: {item}", max_tokens=5), over=parts)
        summary = dag.llm("smart", "Summarise: {scores}", scores=scores)
        dag.output(summary=summary, scores=scores)
    """

    item: Ref = ITEM
    index: Ref = INDEX

    def __init__(self, name: str, *, description: str = "") -> None:
        if not name:
            raise ConfigError("DAG needs a non-empty name, e.g. DAG('triage')")
        self.name = name
        self.description = description
        self._token = f"{name}#{next(_tokens)}"
        self._nodes: dict[str, Node] = {}
        self._outputs: dict[str, Ref | object] = {}
        self._plan: Plan | None = None
        self.session_spec: SessionSpec | None = None

    # -- inputs and outputs -------------------------------------------------

    def input(self, name: str, type: object = None) -> Ref:  # "type" reads as a type hint
        """Declare an input that every run must supply (``inputs={name: ...}``).

        ``type`` (``str``, ``int``, ``list[str]``, a pydantic model, any type pydantic
        validates): every run's value is checked against it before any call (a batch
        record that does not fit is an error row; the service answers 422 naming the
        field, and its OpenAPI schema shows the type). ``None``: any value."""
        return self._add(InputNode(id=self._check_id(name, "input"), annotation=type))

    def output(self, **outputs: Ref | object) -> None:
        """Name the DAG's outputs: ``dag.output(summary=summary, label=label)``."""
        if not outputs:
            raise ConfigError(f"DAG {self.name!r}: output() needs at least one name=ref")
        for name, value in outputs.items():
            self._check_ref(value, f"output {name!r}")
        self._outputs.update(outputs)
        self._plan = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The inputs a caller passes (a session's history and state are loaded instead)."""
        return tuple(
            n.id for n in self._nodes.values() if isinstance(n, InputNode) and not n.session
        )

    def session(
        self,
        *,
        user: str,
        answer: str,
        state: type[BaseModel] | None = None,
        keep_turns: int = 20,
        summarize: str | None = None,
    ) -> Session:
        """Make the DAG conversational: a run given a ``session_id`` continues that session.

        ``user`` names the input that is the user's message of a turn and ``answer`` the
        output that is the reply; after a run, the turn (both, as chat messages) is added
        to the session's history, which keeps the last ``keep_turns`` turns; with
        ``summarize`` (a model alias), a history about to pass ``keep_turns`` has its
        older turns (all but the newest half) folded into one summary message by a call
        to that model, under the run's budget and in the trace. ``state``: a
        pydantic model for the session's typed state; the run sees it as the input
        ``state`` (default values for a new session) and an output named ``state``
        replaces it. Returns refs to the ``history`` (chat messages) and the ``state``;
        ``dag.llm(..., conversation=True)`` puts the history before a prompt.
        """
        where = f"DAG {self.name!r}: session()"
        if self.session_spec is not None:
            raise ConfigError(f"{where} is declared twice; declare it once")
        if isinstance(keep_turns, bool) or not isinstance(keep_turns, int) or keep_turns < 1:
            raise ConfigError(
                f"{where}: keep_turns must be a whole number >= 1 (got {keep_turns!r}); it "
                "bounds the history kept and sent"
            )
        if user not in self.inputs:
            raise ConfigError(
                f"{where}: user={user!r} is not an input of this DAG; declare "
                f"dag.input({user!r}) first (inputs: {list(self.inputs)})"
            )
        if state is not None and not (isinstance(state, type) and issubclass(state, BaseModel)):
            raise ConfigError(f"{where}: state must be a pydantic model class (got {state!r})")
        if state is not None:
            try:
                state()
            except Exception:
                raise ConfigError(
                    f"{where}: state model {state.__name__} needs a default for every field "
                    "(a new session starts from State())"
                ) from None
        for reserved in (HISTORY, STATE):
            if reserved in self._nodes:
                raise ConfigError(
                    f"{where}: a node named {reserved!r} exists; a session's {reserved} "
                    "takes that name, rename the node"
                )
        if summarize is not None and (not isinstance(summarize, str) or not summarize):
            raise ConfigError(f"{where}: summarize must be a model alias, e.g. 'fast'")
        self.session_spec = SessionSpec(
            user=user, answer=answer, state=state, keep_turns=keep_turns, summarize=summarize
        )
        return Session(
            history=self._add(InputNode(id=HISTORY, session=True)),
            state=self._add(InputNode(id=STATE, session=True)),
        )

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self._outputs)

    # -- steps ---------------------------------------------------------------

    def llm(
        self,
        model: str,
        prompt: str | PromptFn,
        *,
        system: str | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        tools: Sequence[Callable[..., object] | type[BaseModel] | Tool | McpTools] = (),
        max_steps: int = 5,
        output: type[BaseModel] | None = None,
        max_output_retries: int = 2,
        guards: Sequence[Callable[..., object]] = (),
        input_guards: Sequence[Callable[..., object]] = (),
        conversation: bool = False,
        review_on_failure: bool = False,
        stream: bool = False,
        media: Sequence[str] = (),
        name: str | None = None,
        required: bool = False,
        bind: Mapping[str, Arg] | None = None,
        **values: Arg,
    ) -> Ref:
        """A chat-completion step on model alias ``model``.

        ``prompt`` is a template over named values (``"Rate: {item}"``) or a function
        of those values returning OpenAI-style messages. Values are bound by keyword
        (``scores=scores_ref``, or ``bind={...}`` for names that clash with
        parameters); DAG inputs and, inside ``map``, ``item``/``index`` bind by name in a
        template (a prompt function inside a map gets them only when bound:
        ``item=DAG.item``).

        ``tools``: Python functions (the model may call them; the node runs them and
        continues: an agent loop) or pydantic models (schemas only: the node's output
        is then the model's tool calls). ``max_steps`` caps the model turns that call
        tools; a model still calling tools after that ends the node with status
        ``max_steps_exceeded`` (``MaxStepsExceeded``), its transcript kept. An
        ``mcp("name")`` entry offers the tools of that MCP server (``[mcp.name]`` in the
        config); a tool marked for approval pauses the run before each call.
        ``output``: a pydantic model; the reply is parsed as JSON and validated, and a
        failure is sent back to the model with the validation error, up to
        ``max_output_retries`` times.

        ``guards``: output guards, run in order on the answer after validation; each
        returns ``None``/``Accept()``, ``Reject(reason)`` or ``Repair(value)`` (see
        ``fanout.guards``). A rejection is sent back to the model with its reason
        (sharing ``max_output_retries`` with validation), then the fallback models are
        tried, then the step escalates. ``input_guards`` see the rendered messages
        before any provider call: ``Repair(messages)`` masks them, ``Reject(reason)``
        fails the node with ``InputRefused`` and no call is made.
        ``conversation=True``: the session's history (see :meth:`session`, declared
        first) goes between the system message and the prompt's messages.
        ``review_on_failure=True``: when the step escalates (every model option failed,
        or a guard rejected the output), it pauses as a review instead of failing (see
        :meth:`review`): the value under review is the error; a person edits in the
        output, approves (the step runs once more) or rejects (it fails).
        ``stream=True``: the reply is streamed (server-sent events); its trace rows get
        the time to first token and tokens/s, and a service streams its tokens to the
        caller. The model's config can stream every call instead (``stream = true``).
        A prompt function may return OpenAI-style content parts (text, ``image_url``,
        ``input_audio``) as a message's content; a model that cannot take a kind of
        part refuses the call before it is made. ``media=["image"]`` (or ``"audio"``)
        declares what the prompt sends, so a model that cannot take it is refused when
        a run starts (a batch job: before its first record) rather than per call.
        """
        node_id = self._auto_id(name, "llm")
        where = f"DAG {self.name!r}, node {node_id!r}"
        bindings = {**(bind or {}), **values}
        if conversation:
            if self.session_spec is None:
                raise ConfigError(
                    f"{where}: conversation=True needs a session; call dag.session(...) "
                    "before this step"
                )
            if HISTORY in bindings:
                raise ConfigError(
                    f"{where}: conversation=True binds {HISTORY!r} itself; rename your "
                    f"{HISTORY!r} value"
                )
            bindings[HISTORY] = Ref(self._token, HISTORY)
        for key, value in bindings.items():
            self._check_ref(value, f"node {node_id!r} value {key!r}")
        if max_tokens <= 0:
            raise ConfigError(f"{where}: max_tokens must be positive (got {max_tokens})")
        if not model:
            raise ConfigError(f"{where}: model alias is empty; name one, e.g. 'fast'")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(
                f"{where}: max_steps must be a whole number >= 1 (got {max_steps!r}); it caps "
                "the model turns that call tools"
            )
        sources = tuple(t for t in tools if isinstance(t, McpTools))
        made_tools = tuple(make_tool(t, where=where) for t in tools if not isinstance(t, McpTools))
        if len({s.server for s in sources}) != len(sources):
            raise ConfigError(f"{where}: an MCP server is listed twice in tools; list it once")
        made_guards = make_guards(guards, where=where, what="guards")
        made_input_guards = make_guards(input_guards, where=where, what="input_guards")
        if made_guards and made_tools and not sources and all(t.fn is None for t in made_tools):
            raise ConfigError(
                f"{where}: output guards check an answer, but a node whose tools are all "
                "schemas returns tool calls; guard a later step, or give Python tools"
            )
        names = [t.name for t in made_tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: two tools share a name ({names}); rename one")
        if isinstance(media, str) or not set(media) <= {"image", "audio"}:
            raise ConfigError(
                f"{where}: media must list 'image' and/or 'audio' (got {list(media)!r}); "
                "text needs no declaring"
            )
        template = Template.parse(prompt, where=where) if isinstance(prompt, str) else prompt
        if not isinstance(template, Template) and not callable(template):
            raise ConfigError(f"{where}: prompt must be a template string or a function")
        return self._add(
            LLMNode(
                id=node_id,
                required=required,
                model=model,
                prompt=template,
                system=Template.parse(system, where=where) if system is not None else None,
                bindings=bindings,
                max_tokens=max_tokens,
                temperature=temperature,
                tools=made_tools,
                mcp=sources,
                max_steps=max_steps,
                output=output,
                max_output_retries=max_output_retries,
                guards=made_guards,
                input_guards=made_input_guards,
                conversation=conversation,
                review_on_failure=review_on_failure,
                stream=bool(stream),
                media=tuple(dict.fromkeys(media)),
            )
        )

    def embed(
        self,
        model: str,
        text: Arg,
        *,
        dimensions: int | None = None,
        name: str | None = None,
        required: bool = False,
    ) -> Ref:
        """Embeddings on model alias ``model``: of a text (the output is its vector, a
        list of floats) or a list of texts (a list of vectors, in order).

        ``text`` is a ``Ref`` (an input, a step's output, ``DAG.item`` in a map body) or a
        literal. The inputs of many concurrent steps and records are packed into one
        request, up to the model's ``embed_max_inputs`` and ``embed_max_tokens`` and
        what its tokens/min bucket holds; each step is charged its share of the
        request's usage. ``dimensions``: the vectors' size (sent with the call; else the
        model's ``dimensions`` in the config). In a batch job's results, a vector is a
        ``fixed_size_list<float32>`` column when its size is known.
        """
        node_id = self._auto_id(name, "embed")
        where = f"DAG {self.name!r}, node {node_id!r}"
        if not model:
            raise ConfigError(f"{where}: model alias is empty; name one, e.g. 'embedder'")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
        ):
            raise ConfigError(
                f"{where}: dimensions must be a whole number >= 1 (got {dimensions!r})"
            )
        if text not in (ITEM, INDEX):
            self._check_ref(text, f"node {node_id!r} text")
        return self._add(
            EmbedNode(
                id=node_id,
                required=required,
                model=model,
                text=text,
                dimensions=dimensions,
                many=self._many(text, where),
            )
        )

    def _many(self, text: Arg, where: str) -> bool | None:
        """Whether ``text`` is a list of texts (``None``: known only when it runs)."""
        if isinstance(text, str):
            return False
        if isinstance(text, list | tuple):
            if not text or not all(isinstance(t, str) for t in text):
                raise ConfigError(f"{where}: text must be a string or a list of strings")
            return True
        if text == ITEM:
            return False  # a map over texts: a vector per item
        if not isinstance(text, Ref):
            raise ConfigError(
                f"{where}: text must be a string, a list of strings or a ref "
                f"(got {type(text).__name__})"
            )
        node = self._nodes.get(text.node_id)
        if isinstance(node, InputNode) and node.annotation is not None:
            if node.annotation is str:
                return False
            if getattr(node.annotation, "__origin__", None) in (list, tuple):
                return True
        return None

    def tool(
        self,
        fn: Callable[..., object],
        *args: Arg,
        name: str | None = None,
        cpu: bool = False,
        num_cpus: float = 1.0,
        inline: bool = False,
        timeout_s: float | None = None,
        required: bool = False,
        **kwargs: Arg,
    ) -> Ref:
        """A Python step: ``fn(*args, **kwargs)`` with upstream ``Ref`` s replaced by their values.

        Async functions are awaited; sync functions run in a thread pool so they never
        block the event loop, unless ``inline=True`` (for microsecond-cheap functions).
        ``cpu=True`` marks CPU-bound work that the Ray backend runs as a Ray task with
        ``num_cpus``; ``timeout_s`` bounds one call.
        """
        if not callable(fn):
            raise ConfigError(f"DAG {self.name!r}: tool {fn!r} is not callable")
        node_id = self._auto_id(name, getattr(fn, "__name__", "tool").strip("<>"))
        for i, value in enumerate((*args, *kwargs.values())):
            self._check_ref(value, f"node {node_id!r} argument {i}")
        return self._add(
            ToolNode(
                id=node_id,
                required=required,
                fn=fn,
                args=args,
                kwargs=kwargs,
                is_async=inspect.iscoroutinefunction(fn),
                cpu=cpu,
                num_cpus=num_cpus,
                inline=inline,
                timeout_s=timeout_s,
            )
        )

    def reduce(
        self,
        fn: Callable[..., object],
        over: Ref,
        *args: Arg,
        name: str | None = None,
        inline: bool = False,
        required: bool = False,
    ) -> Ref:
        """Fan-in: ``fn(results, *args)`` over a mapped list; a ``tool`` step by another name.

        An ``llm`` step that binds a mapped list (``scores=scores``) is a fan-in too.
        """
        return self.tool(fn, over, *args, name=name, inline=inline, required=required)

    def map(
        self,
        body: Ref,
        *,
        over: Ref,
        concurrency: int | None = None,
        on_item_error: OnItemError = "fail",
        name: str | None = None,
        required: bool = False,
    ) -> Ref:
        """Fan-out: run the step ``body`` once per element of the list ``over``.

        ``body`` is an ``llm`` or ``tool`` step just built for this purpose; inside it,
        ``item`` (``{item}`` in templates, ``DAG.item`` as an argument) is the element
        and ``index`` its position. Items start as soon as the list exists and each
        finishes on its own; ``concurrency`` caps how many run at once.
        ``on_item_error``: ``"fail"`` fails the map (and cancels the rest) when an item
        fails; ``"drop"`` leaves failed items out; ``"none"`` puts ``None`` in their place.
        """
        self._check_ref(body, "map body")
        self._check_ref(over, "map over")
        if not isinstance(body, Ref) or body.node_id not in self._nodes:
            raise ConfigError(f"DAG {self.name!r}: map body must be a step of this DAG")
        inner = self._nodes[body.node_id]
        if not isinstance(inner, LLMNode | ToolNode | EmbedNode):
            raise ConfigError(
                f"DAG {self.name!r}: map body {body.node_id!r} is a {inner.kind} node; "
                "map an llm, embed or tool step"
            )
        if isinstance(inner, LLMNode) and inner.review_on_failure:
            raise ConfigError(
                f"DAG {self.name!r}: map body {body.node_id!r} has review_on_failure; a map's "
                "items cannot pause one by one: review the map's output with dag.review()"
            )
        if isinstance(inner, LLMNode) and inner.approvals:
            raise ConfigError(
                f"DAG {self.name!r}: map body {body.node_id!r} has tools that need approval; "
                "a map's items cannot pause one by one: make it a step of its own (a batch "
                "job runs it once per record)"
            )
        users = [n.id for n in self._nodes.values() if body in n.refs()]
        if users:
            raise ConfigError(
                f"DAG {self.name!r}: map body {body.node_id!r} is already used by {users}; "
                "build a fresh step for the map body"
            )
        if concurrency is not None and concurrency <= 0:
            raise ConfigError(f"DAG {self.name!r}: map concurrency must be positive")
        if on_item_error not in ("fail", "drop", "none"):
            raise ConfigError(f"DAG {self.name!r}: on_item_error must be 'fail', 'drop' or 'none'")
        del self._nodes[body.node_id]
        node_id = self._check_id(name, "map") if name else body.node_id
        if name:
            self._unique(node_id)
        return self._add(
            MapNode(
                id=node_id,
                required=required,
                body=inner,
                over=over,
                concurrency=concurrency,
                on_item_error=on_item_error,
            )
        )

    def route(
        self,
        fn: Callable[..., object],
        args: Ref | Sequence[Arg],
        branches: Mapping[str, Arg],
        *,
        name: str | None = None,
        required: bool = False,
    ) -> Ref:
        """Routing: ``fn(*args)`` returns a key of ``branches``; only that branch runs.

        Each branch is a ``Ref`` to a step (with the steps only it needs, which are
        held back until the route decides) or a literal value. Branches not taken are
        ``skipped``, not failed. The route's output is the chosen branch's output.
        ``fn`` runs on the event loop: keep it cheap.
        """
        arg_tuple: tuple[Arg, ...] = (args,) if isinstance(args, Ref) else tuple(args)
        if not branches:
            raise ConfigError(f"DAG {self.name!r}: route needs at least one branch")
        node_id = self._auto_id(name, f"route_{getattr(fn, '__name__', 'fn').strip('<>')}")
        for value in (*arg_tuple, *branches.values()):
            self._check_ref(value, f"route {node_id!r}")
        return self._add(
            RouteNode(id=node_id, required=required, fn=fn, args=arg_tuple, branches=dict(branches))
        )

    def review(
        self,
        value: Ref,
        *,
        instructions: str = "",
        name: str | None = None,
        required: bool = False,
    ) -> Ref:
        """Human review: a person approves, edits or rejects ``value`` before it goes on.

        When a run reaches this step, that branch pauses: the step's status is
        ``waiting_for_review``, the rest of the DAG goes on where it does not depend on
        it, and the engine checkpoints the run in its store (``data_dir``). The output
        is ``value`` once approved, the reviewer's value once edited; a rejection fails
        the step. Resume with ``Engine.resume`` or ``fanout review approve ID --resume``.
        """
        if not isinstance(value, Ref):
            raise ConfigError(
                f"DAG {self.name!r}: review() needs a ref to a step's output (got "
                f"{type(value).__name__}); pass what dag.llm()/dag.tool() returned"
            )
        if not isinstance(instructions, str):
            raise ConfigError(f"DAG {self.name!r}: review instructions must be a string")
        node_id = self._auto_id(name, f"review_{value.node_id}")
        self._check_ref(value, f"review {node_id!r}")
        return self._add(
            ReviewNode(id=node_id, required=required, value=value, instructions=instructions)
        )

    # -- validation ------------------------------------------------------------

    def validate(self, *, models: Collection[str] | None = None) -> Plan:
        """Check the DAG and return its execution plan; raises :class:`ConfigError`.

        With ``models``, every model alias the DAG uses must be among them.
        """
        if self._plan is None:
            self._plan = build_plan(self.name, self._nodes, self._outputs)
        if models is not None:
            self._plan.check_models(models)
        return self._plan

    def __repr__(self) -> str:
        return f"DAG({self.name!r}, nodes={len(self._nodes)}, outputs={list(self._outputs)})"

    # -- helpers -----------------------------------------------------------------

    def _add(self, node: Node) -> Ref:
        self._nodes[node.id] = node
        self._plan = None
        return Ref(self._token, node.id)

    def _auto_id(self, name: str | None, base: str) -> str:
        if name is not None:
            return self._unique(self._check_id(name, "step"))
        base = re.sub(r"[^A-Za-z0-9_-]", "_", base) or "step"
        candidate = base
        for n in itertools.count(2):
            if candidate not in self._nodes and candidate not in ("item", "index"):
                return candidate
            candidate = f"{base}_{n}"
        raise AssertionError("unreachable")

    def _unique(self, node_id: str) -> str:
        if node_id in self._nodes:
            raise ConfigError(f"DAG {self.name!r}: a node named {node_id!r} exists; rename one")
        return node_id

    def _check_id(self, name: str, what: str) -> str:
        if not _ID.match(name) or name in ("item", "index"):
            raise ConfigError(
                f"DAG {self.name!r}: {what} name {name!r} is not valid; use letters, digits, "
                "'_' or '-' (not 'item' or 'index'), starting with a letter"
            )
        return self._unique(name) if what == "input" else name

    def _check_ref(self, value: object, where: str) -> None:
        if isinstance(value, Ref) and value not in (ITEM, INDEX):
            if value.dag != self._token:
                raise ConfigError(
                    f"DAG {self.name!r}: {where} refers to {value.node_id!r} of another DAG; "
                    "use refs returned by this DAG's own methods"
                )
            if value.node_id not in self._nodes:
                raise ConfigError(
                    f"DAG {self.name!r}: {where} refers to {value.node_id!r}, which is a map "
                    "body or was removed; use the ref that dag.map() returned"
                )
