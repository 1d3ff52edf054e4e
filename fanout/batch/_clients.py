"""``batch_clients``: the HTTP client a batch job's providers use when their config names none."""

from __future__ import annotations

import importlib.util

from fanout.config import Config, HttpProviderConfig

__all__ = ["batch_clients"]


def batch_clients(config: Config) -> Config:
    """``config`` as ``fanout run`` uses it: an HTTP provider whose config names no
    ``http_client`` sends its calls over pyreqwest (``http_client = "reqwest"``) when it
    is installed (the ``reqwest`` extra), unless a model on the provider hedges.

    pyreqwest takes about a third of aiohttp's CPU a call, which a batch job on one core
    spends on records instead. Its one trade-off is a call cancelled while in flight: it
    runs on in the background to its answer or its timeout. A batch job cancels almost
    none: a deadline is kept by the request's own timeout, and a Ctrl-C ends the process
    and its connections. A hedge's loser is cancelled on every won hedge, so a provider
    with a hedged model keeps aiohttp. A service (``fanout serve``, an :class:`Engine` of
    your own) keeps aiohttp: callers that hang up cancel calls there.
    """
    if importlib.util.find_spec("pyreqwest") is None:
        return config
    hedged = {model.provider for model in config.models.values() if model.hedge is not None}
    unnamed = [
        name
        for name, provider in config.providers.items()
        if isinstance(provider, HttpProviderConfig)
        and "http_client" not in provider.model_fields_set
        and name not in hedged
    ]
    if not unnamed:
        return config
    providers = dict(config.providers)
    for name in unnamed:
        providers[name] = providers[name].model_copy(update={"http_client": "reqwest"})
    return config.model_copy(update={"providers": providers})
