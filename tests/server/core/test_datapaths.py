"""One rule for every path a spec names under the data directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.core.datapaths import check_relative, confine
from server.core.exceptions import PathEscapeError


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("/etc/passwd", "absolute"), ("C:\\w.pt", "absolute"), ("\\\\host\\share", "absolute"), ("~/.ssh/id", "absolute"),
     ("a/../../b", "'..'"), ("a\\..\\b", "'..'"), ("", "non-empty"), (["a"], "non-empty"), ("a\x00b", "NUL")],
)
def test_refused(value: object, fragment: str) -> None:
    with pytest.raises(PathEscapeError, match=fragment):
        check_relative(value, "model.pretrained")


def test_confined_paths_and_symlinks_of_the_operator(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "w").mkdir(parents=True)
    assert confine(root, "w/model.pt", "model.pretrained") == root / "w" / "model.pt"
    # A link the operator placed inside the data directory may point anywhere: the rule is lexical.
    (tmp_path / "shared").mkdir()
    (root / "shared").symlink_to(tmp_path / "shared")
    assert confine(root, "shared/x.pt", "model.pretrained") == root / "shared" / "x.pt"
    with pytest.raises(PathEscapeError, match=r"model\.pretrained"):
        confine(root, "w/../../x.pt", "model.pretrained")
