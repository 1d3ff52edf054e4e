"""Configs of every wire protocol against one emulator, for the tests of images and
embeddings per protocol (as ``tests/integration/test_protocols_http.py`` builds them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout import parse_config
from fanout.config import Config

KEY = "sk-fanout-parts-0123456789-SECRET"
AWS_KEY_ID = "AKIAFANOUTPARTS0EXAMPLE"
AWS_SECRET = "fanoutPartsSecretAccessKey/0123456789SECRETaws"
SECRETS = (KEY, AWS_SECRET)


def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test's key and AWS credentials in the environment, and no file of this machine's."""
    monkeypatch.setenv("FANOUT_PARTS_KEY", KEY)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.setenv(name, str(tmp_path / "no-aws-file"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def provider(protocol: str, root: str) -> dict[str, object]:
    table: dict[str, dict[str, object]] = {
        "openai": {"kind": "openai", "base_url": f"{root}/v1", "api_key_env": "FANOUT_PARTS_KEY"},
        "anthropic": {"kind": "anthropic", "base_url": f"{root}/v1",
                      "api_key_env": "FANOUT_PARTS_KEY"},
        "azure": {"kind": "azure", "endpoint": root, "api_key_env": "FANOUT_PARTS_KEY"},
        "bedrock": {"kind": "bedrock", "region": "us-east-1", "base_url": root},
        "gemini": {"kind": "gemini", "base_url": f"{root}/v1beta",
                   "api_key_env": "FANOUT_PARTS_KEY"},
    }  # fmt: skip
    return {**table[protocol], "timeout_s": 10.0, "retry": {"initial_backoff_s": 0.01}}


def one_model(protocol: str, root: str, model: str, **spec: object) -> Config:
    """Alias ``m``: ``model`` on ``protocol``'s provider at the emulator's ``root``."""
    return parse_config(
        {
            "providers": {protocol: provider(protocol, root)},
            "models": {"m": {"provider": protocol, "model": model, **spec}},
        }
    )
