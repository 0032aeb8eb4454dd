"""featx.cache.safepath, the one helper every writer and deleter in a cache or runs folder goes through: nothing is
written, truncated, renamed or deleted through a link below the root, links are removed as links, and a read
follows a link only where it stays inside the root. Real files and links in a temporary folder."""

from __future__ import annotations

import os

import pytest

from featx.cache import safepath
from featx.cache.atomic import atomic_path
from featx.cache.safepath import LinkRefused
from featx.errors import FeatxError

PRECIOUS = b"outside: keep me\n"


@pytest.fixture
def root(tmp_path):
    """tmp/root (the cache) with a real folder `sub`, and tmp/outside/file beside it."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "file").write_bytes(PRECIOUS)
    return tmp_path / "root"


def test_check_write_refuses_every_link_below_the_root_and_accepts_a_linked_root(root, tmp_path):
    assert safepath.check_write(root, root / "sub" / "new" / "deeper") == root / "sub" / "new" / "deeper"
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to(root / "sub")  # inside, but still a link: never followed to write
    for path in (root / "out", root / "out" / "file", root / "in" / "x"):
        with pytest.raises(LinkRefused, match=r"is a symbolic link \(to .*\); featx never writes"):
            safepath.check_write(root, path)
    assert issubclass(LinkRefused, FeatxError) and LinkRefused.exit_code == 2
    (tmp_path / "alias").symlink_to(root)  # the root a user names may itself be a link
    assert safepath.check_write(tmp_path / "alias", tmp_path / "alias" / "sub" / "f")
    with pytest.raises(LinkRefused, match="is not inside"):
        safepath.check_write(root, tmp_path / "outside" / "file")


def test_check_read_follows_only_links_that_stay_inside(root, tmp_path):
    (root / "sub" / "f").write_bytes(b"x")
    (root / "in").symlink_to(root / "sub")
    assert safepath.check_read(root, root / "in" / "f").read_bytes() == b"x"
    (root / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused, match=r"'\S+out' is a symbolic link leading out of"):
        safepath.check_read(root, root / "out" / "file")
    (root / "sub" / "hop").symlink_to(root / "out" / "file")  # a link to a link that leads out
    with pytest.raises(LinkRefused, match=r"hop' is a symbolic link leading out"):
        safepath.check_read(root, root / "sub" / "hop")
    (root / "dangling").symlink_to(root / "missing")
    with pytest.raises(LinkRefused, match=r"dangling' is a symbolic link to a missing file"):
        safepath.check_read(root, root / "dangling")


def test_open_file_never_follows_a_link_nor_writes_a_file_with_other_names(root, tmp_path):
    outside = tmp_path / "outside" / "file"
    (root / "sub" / "lock").symlink_to(outside)
    with pytest.raises(LinkRefused, match=r"lock' is a symbolic link"):
        safepath.open_file(root, root / "sub" / "lock", os.O_RDWR | os.O_CREAT)
    os.link(outside, root / "sub" / "hard")
    with pytest.raises(LinkRefused, match=r"hard' is a file with 2 hard links"):
        safepath.open_file(root, root / "sub" / "hard", os.O_RDWR)
    os.mkfifo(root / "sub" / "fifo")
    with pytest.raises(LinkRefused, match=r"fifo' is not a plain file"):
        safepath.open_file(root, root / "sub" / "fifo", os.O_RDWR)
    assert outside.read_bytes() == PRECIOUS
    fd = safepath.open_file(root, root / "sub" / "own", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"mine")
    os.close(fd)
    assert (root / "sub" / "own").read_bytes() == b"mine"


def test_removing_a_link_removes_the_link_never_its_target(root, tmp_path):
    (root / "dir-link").symlink_to(tmp_path / "outside")
    (root / "file-link").symlink_to(tmp_path / "outside" / "file")
    safepath.rmtree(root, root / "dir-link")
    safepath.remove(root, root / "file-link")
    assert not os.path.lexists(root / "dir-link") and not os.path.lexists(root / "file-link")
    (root / "sub" / "inner").symlink_to(tmp_path / "outside")  # a link inside a folder being deleted
    safepath.rmtree(root, root / "sub")
    assert not (root / "sub").exists() and (tmp_path / "outside" / "file").read_bytes() == PRECIOUS
    (root / "via").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused):
        safepath.rmtree(root, root / "via" / "anything")
    with pytest.raises(LinkRefused):
        safepath.rename(root, root / "via" / "file", root / "stolen")
    assert (tmp_path / "outside" / "file").read_bytes() == PRECIOUS


def test_atomic_path_replaces_a_link_at_its_name_and_never_writes_through_one(root, tmp_path):
    outside = tmp_path / "outside" / "file"
    (root / "sub" / "index.h5").symlink_to(outside)
    (root / "sub" / f".index.h5.{os.getpid()}.tmp").symlink_to(outside)  # its temporary name, taken by a link
    with atomic_path(root / "sub" / "index.h5", root) as tmp:
        tmp.write_bytes(b"new")
    assert (root / "sub" / "index.h5").read_bytes() == b"new" and not (root / "sub" / "index.h5").is_symlink()
    assert outside.read_bytes() == PRECIOUS
    (root / "linked").symlink_to(tmp_path / "outside")
    with pytest.raises(LinkRefused), atomic_path(root / "linked" / "x", root) as tmp:
        tmp.write_bytes(b"never")
    assert sorted(os.listdir(tmp_path / "outside")) == ["file"]
