"""Guards for llm nodes: the verdicts a guard returns, and a few ready-made guards.

::

    from fanout import DAG
    from fanout.guards import Reject, Repair, mask_pii, max_prompt_chars

    def no_urls(answer: str) -> Reject | None:
        return Reject("do not include links") if "http" in answer else None

    dag.llm("fast", "Reply to: {text}", guards=[no_urls],
            input_guards=[max_prompt_chars(8000), mask_pii])

An output guard gets the answer (text, or the validated ``output`` model); an input
guard gets the rendered messages. Each returns ``None``/``Accept()`` (pass),
``Reject(reason)`` (an output is retried with the reason, then the fallback models,
then escalated; an input is refused with ``InputRefused`` and no call is made) or
``Repair(value)`` (a corrected output, or masked messages). Sync guards run on the
event loop: keep them cheap, or write them ``async`` and offload heavy work.
"""

from fanout.dag import Accept, GuardFn, Reject, Repair, Verdict, mask_pii, max_prompt_chars
from fanout.errors import GuardRejected, InputRefused

__all__ = [
    "Accept",
    "GuardFn",
    "GuardRejected",
    "InputRefused",
    "Reject",
    "Repair",
    "Verdict",
    "mask_pii",
    "max_prompt_chars",
]
