"""The Toxiproxy server the chaos tests share (one per module)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chaos.toxiproxy import Toxiproxy


@pytest.fixture(scope="module")
def toxi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toxiproxy]:
    log = tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log"
    with Toxiproxy(str(log)) as t:
        yield t
