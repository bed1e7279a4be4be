"""The client never sends a bearer token in plaintext beyond loopback (no network needed:
the refusal comes before any channel is opened)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from coord import errors
from coord.cli.output import EXIT_CONFIG
from coord.client import Client
from coord.client.credentials import Credentials


@pytest.mark.parametrize("endpoint", ["10.0.0.5:2379", "db1.example:2379", "[2001:db8::1]:2379"])
def test_a_token_is_refused_over_plaintext_beyond_loopback(endpoint: str) -> None:
    creds = Credentials(token="s3cret")
    with pytest.raises(errors.InvalidArgument, match=r"plaintext.*--cacert"):
        Client([endpoint], credentials=creds)
    with pytest.raises(errors.InvalidArgument, match="plaintext"):
        creds.channel(endpoint)
    with pytest.raises(errors.InvalidArgument, match="plaintext"):
        creds.aio_channel(endpoint)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:2379", "localhost:2379", "[::1]:2379"])
def test_a_token_may_go_in_plaintext_on_loopback(endpoint: str) -> None:
    Client([endpoint], credentials=Credentials(token="s3cret")).close()


def test_a_token_over_tls_or_no_token_goes_anywhere() -> None:
    Client(["10.0.0.5:2379"], credentials=Credentials(token="s3cret", ca_file="ca.pem")).close()
    Client(["10.0.0.5:2379"], credentials=Credentials()).close()


def test_coordctl_says_what_to_do() -> None:
    p = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "coordctl"),
            "--endpoints",
            "10.0.0.5:2379",
            "--token",
            "s3cret",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert p.returncode == EXIT_CONFIG, p.stderr
    assert "refusing to send a bearer token in plaintext to 10.0.0.5:2379" in p.stderr
    assert "--cacert" in p.stderr
