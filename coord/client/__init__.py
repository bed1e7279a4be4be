"""coord's client library. Imports coord.v1 and coord.errors only, never server code."""

from __future__ import annotations

from coord.client.client import Client, parse_endpoints

__all__ = ["Client", "parse_endpoints"]
