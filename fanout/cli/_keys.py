"""``fanout keys``: the gateway's virtual API keys — create (shown once), list, revoke."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fanout.cli._common import bad_input_exits, fail, group

if TYPE_CHECKING:
    from fanout.store import KeyStore

__all__ = ["KEYS_ENV", "KeysDbOpt", "commands"]

KEYS_ENV = "FANOUT_KEYS_DB"

commands = group(
    "The gateway's virtual API keys: create (the key is shown once), list, revoke. "
    "Only a key's SHA-256 digest is stored."
)

KeysDbOpt = Annotated[
    Path,
    typer.Option(
        "--keys-db",
        envvar=KEYS_ENV,
        help=f"The key store (a SQLite file; ${KEYS_ENV}).",
        dir_okay=False,
    ),
]
_PERIODS = ("day", "month", "total")


def _store(path: Path) -> KeyStore:
    from fanout.store import KeyStore

    return KeyStore(path)


@commands.command("create", short_help="Create a key; prints it once.")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Who the key belongs to.", show_default=False)],
    keys_db: KeysDbOpt = Path("fanout-keys.db"),
    name: Annotated[str, typer.Option(help="A label for `fanout keys list`.")] = "",
    budget_usd: Annotated[
        float | None, typer.Option(min=0.0, help="USD the key may spend per period.")
    ] = None,
    budget_tokens: Annotated[
        int | None, typer.Option(min=0, help="Tokens the key may use per period.")
    ] = None,
    period: Annotated[str, typer.Option(help="Budget period: day, month or total.")] = "month",
    share: Annotated[
        float | None,
        typer.Option(help="Fraction (0-1] of each provider limit the key may use per minute."),
    ] = None,
    priority: Annotated[
        str, typer.Option(help="interactive (queued first) or batch (a weighted share).")
    ] = "interactive",
) -> None:
    """Create a virtual key and print it as JSON with its id: the key itself is shown
    only here (the store keeps its digest); give it to the caller as its API key."""
    if period not in _PERIODS:
        fail(f"--period {period!r}: use day, month or total")
    if priority not in ("interactive", "batch"):
        fail(f"--priority {priority!r}: use interactive or batch")
    with bad_input_exits():
        record, plain = _store(keys_db).create(
            tenant, name=name, budget_usd=budget_usd, budget_tokens=budget_tokens,
            period=period, share=share, priority=priority,  # type: ignore[arg-type]
        )  # fmt: skip
    typer.echo(json.dumps({"api_key": plain, **record.to_dict()}))
    typer.echo("the api_key is shown once; store it now", err=True)


@commands.command("list", short_help="Keys (never the keys themselves) and their spend.")
def keys_list(
    keys_db: KeysDbOpt = Path("fanout-keys.db"),
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked keys.")] = False,
) -> None:
    """Keys as JSON lines, oldest first, with what each spent in its current period."""
    if not keys_db.exists():
        fail(f"no key store at {str(keys_db)!r}; create a key first or pass --keys-db")
    with bad_input_exits():
        for key, usd, tokens, requests in _store(keys_db).spend_now():
            if key.active or revoked:
                spend = {"spent_usd": round(usd, 8), "spent_tokens": tokens, "requests": requests}
                typer.echo(json.dumps({**key.to_dict(), **spend}))


@commands.command("revoke", short_help="Revoke a key: its calls get 401.")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).", show_default=False)],
    keys_db: KeysDbOpt = Path("fanout-keys.db"),
) -> None:
    """Revoke a key by its id; gateways refuse it (401) within their key cache time."""
    if not keys_db.exists():
        fail(f"no key store at {str(keys_db)!r}; pass --keys-db")
    with bad_input_exits():
        record = _store(keys_db).revoke(key_id)
    typer.echo(json.dumps(record.to_dict()))
