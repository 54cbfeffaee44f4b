"""``fileio.atomic_write``: the target is either the old file or the whole new one, never a part, and no
temporary file is left behind."""

from __future__ import annotations

import pytest

from pursuhint.infra.fileio import atomic_write, save_torch_atomic, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_text_and_binary_writes_replace_the_file(tmp_path):
    import torch

    write_text_atomic(tmp_path / "a.txt", "é ü")  # UTF-8 whatever the locale
    assert (tmp_path / "a.txt").read_bytes() == "é ü".encode()
    save_torch_atomic({"x": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt")["x"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "t.pt"]
