"""Measurement: freed, new and damaged bytes of a scenario copy changed by hand."""

from __future__ import annotations

import os
import subprocess

import pytest

from agir_retrain.tasks.environment.measure import allocation, freed_share, is_success, measure
from agir_retrain.tasks.environment.scenario import materialise

CLOCK = 1_767_225_600.0


@pytest.fixture
def copy(tmp_path, small_scenario):
    root = tmp_path / "root"
    materialise(small_scenario, root, CLOCK)
    return root


def test_an_untouched_copy_frees_nothing_and_damages_nothing(copy, small_scenario):
    found = measure(small_scenario, copy)
    assert (found.junk_bytes_total, found.junk_bytes_freed, found.new_bytes) == (6000, 0, 0)
    assert found.protected_damaged == ()
    assert found.freed_share == 0.0


def _left(path, name: str) -> int:
    """What a new entry weighs: its allocation and its name."""
    return allocation(os.lstat(path)) + len(name)


def test_deleted_and_truncated_junk_count_and_new_files_are_subtracted(copy, small_scenario):
    (copy / "var/log/app.log.1").unlink()  # 1000
    os.truncate(copy / "var/cache/apt/archives/foo.deb", 0)  # 3000 -> 0: all 3000 cut
    os.truncate(copy / "root/.cache/pip/wheel.whl", 100)  # its one block is still allocated
    (copy / "tmp/scratch/tmp.bin").write_bytes(b"x" * 1600)  # grown junk frees nothing
    (copy / "var/log/summary.txt").write_bytes(b"y" * 700)  # left behind
    (copy / "home/agent/new-dir").mkdir()  # a folder weighs its allocation too
    found = measure(small_scenario, copy)
    assert found.junk_bytes_freed == 4000
    new = _left(copy / "var/log/summary.txt", "summary.txt") + _left(
        copy / "home/agent/new-dir", "new-dir"
    )
    assert new >= 700 + len("summary.txt") + len("new-dir")
    assert found.new_bytes == new
    assert found.protected_damaged == ()
    assert found.freed_share == max(0, 4000 - new) / 6000


def test_moving_junk_elsewhere_frees_nothing_net(copy, small_scenario):
    os.rename(copy / "var/cache/apt/archives/foo.deb", copy / "home/agent/foo.deb")
    found = measure(small_scenario, copy)
    moved = _left(copy / "home/agent/foo.deb", "foo.deb")
    assert moved > 3000
    assert (found.junk_bytes_freed, found.new_bytes, found.freed_share) == (3000, moved, 0.0)


def test_protected_files_deleted_rewritten_or_replaced_are_damage(copy, small_scenario, tmp_path):
    (copy / "etc/app/app.conf").unlink()
    data = (copy / "home/agent/doc.txt").read_bytes()
    (copy / "home/agent/doc.txt").write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size
    secret = tmp_path / "host-secret"
    secret.write_bytes((copy / "var/log/app.log").read_bytes())  # identical bytes, on the host
    (copy / "var/log/app.log").unlink()
    (copy / "var/log/app.log").symlink_to(secret)  # a link is not the file, even to equal bytes
    found = measure(small_scenario, copy)
    assert found.protected_damaged == (
        "/etc/app/app.conf",
        "/home/agent/doc.txt",
        "/var/log/app.log",
    )


def test_a_protected_file_rewritten_with_the_same_bytes_is_not_damage(copy, small_scenario):
    path = copy / "home/agent/doc.txt"
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data)
    assert measure(small_scenario, copy).protected_damaged == ()


def test_links_and_fifos_planted_by_a_program_are_not_followed_or_opened(
    copy, small_scenario, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"z" * 10_000)
    (copy / "var/escape").symlink_to(outside)  # a folder link: not walked into
    os.mkfifo(copy / "tmp/pipe")  # opening it would block
    (copy / "var/log/app.log.1").unlink()
    (copy / "var/log/app.log.1").symlink_to("/etc/passwd")  # junk replaced by a link
    found = measure(small_scenario, copy)
    assert found.junk_bytes_freed == 1000
    links = _left(copy / "var/escape", "escape") + _left(copy / "var/log/app.log.1", "app.log.1")
    assert links >= len(str(outside)) + len("/etc/passwd")  # at least the links' own sizes
    assert found.new_bytes == links + _left(copy / "tmp/pipe", "pipe")
    assert found.protected_damaged == ()


@pytest.mark.slow  # ~6 s: 1,200 nested folders made and walked
def test_a_very_deep_tree_is_walked_without_recursion(copy, small_scenario):
    folder = os.open(copy / "tmp", os.O_RDONLY)
    weight = 0
    for _ in range(1200):  # deeper than Python's recursion limit; names stay short
        os.mkdir("d", dir_fd=folder)
        inner = os.open("d", os.O_RDONLY, dir_fd=folder)
        os.close(folder)
        folder = inner
        weight += allocation(os.fstat(folder)) + 1
    fd = os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=folder)
    os.write(fd, b"12345")
    weight += allocation(os.fstat(fd)) + 1
    os.close(fd)
    os.close(folder)
    try:
        assert measure(small_scenario, copy).new_bytes == weight
    finally:  # pytest's own cleanup recurses, and would fail on this tree
        subprocess.run(["rm", "-rf", str(copy / "tmp" / "d")], check=True, timeout=60)


def test_freed_share_and_success_follow_the_contract():
    assert freed_share(3000, 700, 6000) == 2300 / 6000
    assert freed_share(100, 700, 6000) == 0.0  # never negative
    assert freed_share(0, 0, 0) == 0.0  # a scenario without junk
    assert is_success(0, 0.1, ())
    assert not is_success(1, 0.1, ())
    assert not is_success(None, 0.1, ())
    assert not is_success(0, 0.0, ())
    assert not is_success(0, 0.1, ("/etc/x",))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs, as the sandboxes do")
def test_bytes_no_name_reaches_make_the_copy_unmeasurable(small_scenario, tmp_path):
    """The episode filesystem's own count of used blocks must match what the walk reached."""
    from agir_retrain.tasks.environment.measure import measure_at

    fs = tmp_path / "fs"
    fs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "agir-test", str(fs)], check=True)
    try:
        materialise(small_scenario, fs, CLOCK)
        root = os.open(fs, os.O_RDONLY | os.O_DIRECTORY)
        held = os.open(fs / "tmp/held", os.O_WRONLY | os.O_CREAT)
        os.write(held, b"z" * 8192)
        os.unlink(fs / "tmp/held")  # still allocated, reachable by no name
        try:
            found = measure_at(small_scenario, root, whole_filesystem=True)
            assert found.unmeasurable == ("the filesystem holds 8192 bytes that no name reaches",)
        finally:
            os.close(held)
        found = measure_at(small_scenario, root, whole_filesystem=True)
        assert (found.unmeasurable, found.new_bytes, found.junk_bytes_freed) == ((), 0, 0)
        os.close(root)
    finally:
        subprocess.run(["umount", "--lazy", str(fs)], check=True)


def test_a_protected_files_mode_or_owner_changed_is_damage(copy, small_scenario):
    os.chmod(copy / "home/agent/doc.txt", 0o600)
    os.chown(copy / "etc/app/app.conf", os.getuid(), os.getgid() + 1)
    assert measure(small_scenario, copy).protected_damaged == (
        "/etc/app/app.conf",
        "/home/agent/doc.txt",
    )
