"""The correlation benchmark runs end to end at a tiny size."""
from __future__ import annotations

import gc
import re

import pytest

from benchmarks import bench_correlation


@pytest.fixture
def gc_settings():
    """The benchmark tunes and freezes the GC: give the test process its settings back."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_benchmark_prints_its_figures(gc_settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_correlation.main(["--events", "3000", "--keys", "300"]) == 0
    out = capsys.readouterr().out
    assert "rules: 10 detection, 20 correlation" in out and "generated 3,000 events, 300 source addresses" in out
    rates = re.findall(r"([\d,]+) events/s", out)
    assert len(rates) == 5 and all(int(rate.replace(",", "")) > 0 for rate in rates)
    per_key = re.search(r"([\d,]+) active keys held .* = (\d+) bytes per active key", out)
    assert per_key is not None and int(per_key.group(1).replace(",", "")) > 0 and int(per_key.group(2)) > 0
