"""``fanout sim-server``: the provider emulator on loopback, for tests, demos and benchmarks."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from fanout.cli._common import bad_input_exits, fail, group

__all__ = ["commands"]

commands = group()


@commands.command("sim-server", short_help="The provider emulator on loopback: limits, faults.")
def sim_server(  # one parameter per option: typer reads the signature
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 8000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    rpm: Annotated[float | None, typer.Option(help="Requests/min per key and model.")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens/min per key and model.")] = None,
    burst_s: Annotated[float, typer.Option(help="Bucket size, in seconds of refill.")] = 1.0,
    latency_ms: Annotated[float, typer.Option(help="Base latency per call.")] = 0.0,
    latency_per_token_ms: Annotated[float, typer.Option(help="Added per output token.")] = 0.0,
    jitter_sigma: Annotated[float, typer.Option(help="Lognormal sigma on latency.")] = 0.0,
    tail_rate: Annotated[float, typer.Option(help="Share of calls that wait longer.")] = 0.0,
    tail_latency_ms: Annotated[float, typer.Option(help="Added to those calls.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Share of calls answered 500.")] = 0.0,
    truncate_rate: Annotated[float, typer.Option(help="Share of bodies cut short.")] = 0.0,
    hang_rate: Annotated[float, typer.Option(help="Share of calls that never answer.")] = 0.0,
    malformed_rate: Annotated[float, typer.Option(help="Share of malformed bodies.")] = 0.0,
    overloaded_rate: Annotated[
        float, typer.Option(help="Share refused as overloaded (Anthropic's 529, else 503).")
    ] = 0.0,
    throttle_rate: Annotated[
        float, typer.Option(help="Share refused as rate limited whatever the buckets hold.")
    ] = 0.0,
    cache_min_tokens: Annotated[
        int, typer.Option(min=1, help="A system prompt this long is reported cached.")
    ] = 1024,
    no_limit_headers: Annotated[
        bool,
        typer.Option("--no-limit-headers", help="Do not send x-ratelimit-limit-* headers."),
    ] = False,
    api_key_env: Annotated[
        str | None, typer.Option(help="Require the key held in this environment variable.")
    ] = None,
    record_prompts: Annotated[
        bool,
        typer.Option(
            "--record-prompts", help="Count answered calls per prompt (GET /stats/prompts)."
        ),
    ] = False,
    max_context_tokens: Annotated[
        int | None, typer.Option(min=1, help="Larger requests: a context-length 400.")
    ] = None,
    max_body_bytes: Annotated[
        int | None, typer.Option(min=1, help="Larger request bodies: a 413.")
    ] = None,
    proxy_headers: Annotated[
        bool,
        typer.Option(
            "--proxy-headers",
            help="Send limit and retry headers as LiteLLM's proxy forwards them (llm_provider-).",
        ),
    ] = False,
    batch_delay_s: Annotated[
        float, typer.Option(min=0.0, help="Batch API: a batch's lines complete over this long.")
    ] = 1.0,
    batch_expire_s: Annotated[
        float,
        typer.Option(min=0.0, help="Batch API: a batch expires this long after its creation."),
    ] = 86_400.0,
    batch_line_error_rate: Annotated[
        float, typer.Option(help="Batch API: share of lines answered 500.")
    ] = 0.0,
    batch_queue_tokens: Annotated[
        int | None,
        typer.Option(min=1, help="Batch API: enqueued prompt tokens allowed per model."),
    ] = None,
    batch_max_requests: Annotated[
        int,
        typer.Option(
            min=1, help="Batch API: requests one /v1/batches batch may hold (Message Batches: "
            "100,000)."
        ),
    ] = 50_000,
    cut_streams: Annotated[
        int, typer.Option(min=0, help="This many streamed replies break off half-way.")
    ] = 0,
    overload_streams: Annotated[
        int,
        typer.Option(
            min=0,
            help="This many streamed Anthropic, Gemini or Bedrock replies end half-way on "
            "the protocol's overloaded error event.",
        ),
    ] = 0,
) -> None:
    """Run the provider emulator (limits, latency, faults) on loopback.

    It serves OpenAI's /v1/chat/completions (streamed for "stream": true),
    /v1/embeddings (hash-seeded vectors) and the Files and Batch APIs (/v1/files,
    /v1/batches: validating -> in_progress -> finalizing -> completed, or failed,
    expired, cancelled), with the --batch-* options; Anthropic's /v1/messages and
    Message Batches (/v1/messages/batches, the same --batch-* options), Azure
    OpenAI's /openai/deployments/D/chat/completions, Bedrock's /model/M/converse and
    Gemini's /v1beta/models/M:generateContent, each streamed as its vendor streams it
    (Anthropic's "stream": true, Bedrock's /converse-stream, Gemini's
    :streamGenerateContent?alt=sse).
    """
    rates = {"error": error_rate, "truncate": truncate_rate, "hang": hang_rate, "tail": tail_rate}
    rates |= {"overloaded": overloaded_rate, "throttle": throttle_rate}
    rates["batch-line-error"] = batch_line_error_rate
    for name, rate in {**rates, "malformed": malformed_rate}.items():
        if not 0 <= rate <= 1:
            fail(f"--{name}-rate must be between 0 and 1 (got {rate})")
    key = None
    if api_key_env:
        key = os.environ.get(api_key_env)
        if not key:
            fail(f"--api-key-env {api_key_env}: that environment variable is not set")
    with bad_input_exits():
        from fanout._extras import require

        require("fanout sim-server", "starlette", "uvicorn", extra="sim")
        from fanout.sim.server import BatchEmulatorConfig, EmulatorConfig, serve

    config = EmulatorConfig(
        requests_per_min=rpm,
        tokens_per_min=tpm,
        burst_s=burst_s,
        latency_ms=latency_ms,
        latency_per_token_ms=latency_per_token_ms,
        jitter_sigma=jitter_sigma,
        tail_rate=tail_rate,
        tail_latency_ms=tail_latency_ms,
        error_rate=error_rate,
        truncate_rate=truncate_rate,
        hang_rate=hang_rate,
        malformed_rate=malformed_rate,
        send_limit_headers=not no_limit_headers,
        api_key=key,
        record_prompts=record_prompts,
        max_context_tokens=max_context_tokens,
        max_body_bytes=max_body_bytes,
        proxy_headers=proxy_headers,
        cut_streams=cut_streams,
        overload_streams=overload_streams,
        overloaded_rate=overloaded_rate,
        throttle_rate=throttle_rate,
        cache_min_tokens=cache_min_tokens,
        batch=BatchEmulatorConfig(
            delay_s=batch_delay_s,
            expire_s=batch_expire_s,
            line_error_rate=batch_line_error_rate,
            queue_tokens=batch_queue_tokens,
            max_requests=batch_max_requests,
        ),
    )
    typer.echo(f"fanout sim-server on http://{host}:{port}/v1 (stats: /stats)", err=True)
    serve(config, host=host, port=port)
