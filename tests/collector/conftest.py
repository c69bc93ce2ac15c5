"""Fixtures for the collector tests: an embedded receiver on loopback ephemeral ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inferaudit_collector.service import Collector, CollectorConfig


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    col = Collector(CollectorConfig(directory=tmp_path / "out", http_port=0, grpc_port=0,
                                    flush_interval_s=0.2)).start()
    try:
        yield col
    finally:
        col.stop()
