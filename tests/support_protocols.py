"""Configs of every wire protocol against one emulator, and the environment their
secrets come from, for the tests that run once per protocol (calls, streams, images,
embeddings). Each test file may use secrets of its own, to tell whose leaked."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout import parse_config
from fanout.config import Config

KEY = "sk-fanout-parts-0123456789-SECRET"
AWS_KEY_ID = "AKIAFANOUTPARTS0EXAMPLE"
AWS_SECRET = "fanoutPartsSecretAccessKey/0123456789SECRETaws"
SECRETS = (KEY, AWS_SECRET)
KEY_ENV = "FANOUT_PARTS_KEY"
PROTOCOLS = ("openai", "anthropic", "azure", "bedrock", "gemini")
MODELS = {
    "openai": "gpt-4o-mini",
    "anthropic": "claude-3-5-haiku-latest",
    "azure": "gpt-4o-mini-prod",  # a deployment's name
    "bedrock": "anthropic.claude-3-haiku-20240307-v1:0",  # a colon, quoted in the path
    "gemini": "gemini-2.0-flash",
}


def aws_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    *,
    key_env: str = KEY_ENV,
    key: str = KEY,
    aws_key_id: str = AWS_KEY_ID,
    aws_secret: str = AWS_SECRET,
) -> None:
    """The test's key (in ``key_env``) and AWS credentials in the environment, and no
    file of this machine's."""
    monkeypatch.setenv(key_env, key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", aws_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", aws_secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "no-aws-file"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def provider(
    protocol: str, root: str, *, key_env: str = KEY_ENV, **extra: object
) -> dict[str, object]:
    """``protocol``'s provider table at the emulator's ``root`` (its key read from
    ``key_env``; Bedrock's from the AWS variables), with ``extra`` keys on top."""
    table: dict[str, dict[str, object]] = {
        "openai": {"kind": "openai", "base_url": f"{root}/v1", "api_key_env": key_env},
        "anthropic": {"kind": "anthropic", "base_url": f"{root}/v1", "api_key_env": key_env},
        "azure": {"kind": "azure", "endpoint": root, "api_key_env": key_env},
        "bedrock": {"kind": "bedrock", "region": "us-east-1", "base_url": root},
        "gemini": {"kind": "gemini", "base_url": f"{root}/v1beta", "api_key_env": key_env},
    }
    common = {"timeout_s": 10.0, "retry": {"initial_backoff_s": 0.01}}
    return {**table[protocol], **common, **extra}


def one_model(protocol: str, root: str, model: str, **spec: object) -> Config:
    """Alias ``m``: ``model`` on ``protocol``'s provider at the emulator's ``root``."""
    return parse_config(
        {
            "providers": {protocol: provider(protocol, root)},
            "models": {"m": {"provider": protocol, "model": model, **spec}},
        }
    )
