"""benchmarks/bench_dataload.py: a loader is timed with no other loader alive, and only its steady state."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import bench_dataload  # noqa: E402


class FakeLoader:
    """Resumes where the last iterator stopped, as ShardLoader does; records which batches were
    handed out and whether an iterator is still open (a live one would be decoding ahead)."""

    def __init__(self, epoch: int):
        self.epoch, self.position, self.open, self.handed = epoch, 0, 0, []

    def __iter__(self):
        self.open += 1
        try:
            while self.position < self.epoch:
                self.position += 1
                self.handed.append(self.position)
                yield SimpleNamespace(images=torch.zeros(3, 1, 1, 1))
            self.position = 0
        finally:
            self.open -= 1


def test_each_call_closes_its_iterator_resumes_the_next_and_times_only_the_steady_batches():
    loader = FakeLoader(epoch=7)
    pull = bench_dataload._Puller(loader, batches_per_call=3, lead=2, sync=lambda: None)
    pull()
    assert loader.open == 0 and loader.handed == [1, 2, 3, 4, 5, 6]  # 1 set-up + 2 lead + 3 timed
    assert pull.steady[0][1] == 3 * 3 and len(pull.setup_s) == 1
    pull()  # batch 7 ends the epoch: a fresh iterator, set-up and lead again, then 3 timed
    assert loader.open == 0 and loader.handed[6:] == [7, 1, 2, 3, 4, 5, 6]
    assert pull.steady[1][1] == 3 * 3 and len(pull.setup_s) == 3  # this call opened two iterators
    assert all(r > 0 for r in pull.rates(2))
