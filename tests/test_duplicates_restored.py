"""A duplicate replays its owner's whole history even when the owner was restored from a checkpoint: the
owner's new claim starts the key's history afresh, so the restored epochs are given to the index first."""

from __future__ import annotations

from pursuhint.search.duplicate_index import DuplicateIndex
from pursuhint.search.trial import index_restored
from pursuhint.train.loop import EpochStats


class _Remote:
    """The duplicate index as a trial reaches it (``index.update.remote(...)``), without Ray."""

    def __init__(self, index: DuplicateIndex) -> None:
        self.update = type("Call", (), {"remote": staticmethod(index.update)})


def stats(epoch: int, val: float) -> EpochStats:
    return EpochStats(epoch=epoch, epochs=3, lr=0.1, losses={"total": 1.0}, train_acc=50.0, val_acc=val,
                      val_top5=90.0, epoch_time=1.0, images_per_s=10.0)


def test_a_restored_owners_duplicate_replays_every_epoch():
    index = DuplicateIndex()
    assert index.claim("k", "owner")["role"] == "owner"
    index.update("k", "owner", {"epoch": 1, "val_acc": 40.0})
    # the owner's worker died; restored from its checkpoint after epoch 2, it claims the key again
    assert index.claim("k", "owner")["role"] == "owner" and index.entries["k"]["history"] == []
    index_restored(_Remote(index), "k", "owner", [stats(1, 40.0), stats(2, 55.0)])
    index.update("k", "owner", {"epoch": 3, "val_acc": 50.0})
    index.finish("k", "owner", "done", "completed")
    claim = index.claim("k", "dup")
    assert claim["role"] == "reuse"
    assert [h["epoch"] for h in claim["history"]] == [1, 2, 3]
    assert [h["best_val_acc"] for h in claim["history"][:2]] == [40.0, 55.0]
    index_restored(None, "k", "owner", [stats(1, 40.0)])  # without an index: nothing to do
