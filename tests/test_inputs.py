"""Finding input files on a hostile filesystem: bounded walks, nothing opened blindly."""

from __future__ import annotations

import glob
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from agir_retrain.tasks.inputs import (
    BrokenLinkError,
    NotARegularFileError,
    expand_inputs,
    mark_duplicates,
    read_run_bytes,
)
from agir_retrain.tasks.records import QuarantineReason
from agir_retrain.tasks.runs.reader import ReadLimits, read_run_file


def _names(files) -> list[str]:
    return [Path(f.location).name for f in files]


@pytest.fixture
def hostile(tmp_path, data_file) -> Path:
    """A folder of run files beside a FIFO, a socket, broken links and a loop of links."""
    import socket

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "good.json").write_bytes(Path(data_file("v4_kib.json")).read_bytes())
    os.mkfifo(folder / "fifo.json")
    (folder / "dangling.json").symlink_to(folder / "missing.json")
    (folder / "loop_a.json").symlink_to(folder / "loop_b.json")
    (folder / "loop_b.json").symlink_to(folder / "loop_a.json")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "sock.json"))
    yield folder
    server.close()


class TestNotRegularFiles:
    @pytest.mark.timeout(60)  # before: opening the FIFO waited for a writer forever
    def test_each_is_listed_then_quarantined_with_its_reason(self, hostile):
        files = expand_inputs([str(hostile)])
        assert _names(files) == [
            "dangling.json", "fifo.json", "good.json", "loop_a.json", "loop_b.json", "sock.json",
        ]  # fmt: skip
        reasons = {
            Path(f.location).name: [q.reason for q in read_run_file(f.location).quarantined]
            for f in files
        }
        assert reasons == {
            "dangling.json": [QuarantineReason.BROKEN_LINK],
            "fifo.json": [QuarantineReason.NOT_A_REGULAR_FILE],
            "good.json": [],
            "loop_a.json": [QuarantineReason.BROKEN_LINK],
            "loop_b.json": [QuarantineReason.BROKEN_LINK],
            "sock.json": [QuarantineReason.NOT_A_REGULAR_FILE],
        }

    def test_read_run_bytes_says_what_the_path_is(self, hostile):
        with pytest.raises(NotARegularFileError, match="FIFO"):
            read_run_bytes(str(hostile / "fifo.json"), 100)
        with pytest.raises(NotARegularFileError, match="folder"):
            read_run_bytes(str(hostile), 100)
        with pytest.raises(BrokenLinkError, match="missing"):
            read_run_bytes(str(hostile / "dangling.json"), 100)
        with pytest.raises(BrokenLinkError, match="loop"):
            read_run_bytes(str(hostile / "loop_a.json"), 100)

    @pytest.mark.timeout(120)
    def test_ingest_of_the_folder_finishes_and_balances(self, hostile, tmp_path):
        import json

        from agir_retrain.tasks.runs.ingest import ingest

        ingest([str(hostile)], str(tmp_path / "out"), limits=ReadLimits(), shard_bytes=1, workers=1)
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert (report["files_in"], report["files_read"]) == (6, 1)
        assert report["quarantine_reasons"] == {"broken_link": 3, "not_a_regular_file": 2}


class TestSizeLimit:
    def test_a_file_over_the_limit_is_read_no_further_than_the_limit(self, tmp_path):
        huge = tmp_path / "huge.json"
        with open(huge, "wb") as handle:
            handle.truncate(1 << 30)  # 1 GiB, sparse: costs nothing to make, a lot to read
        tracemalloc.start()
        data, size = read_run_bytes(str(huge), 1000)
        result = read_run_file(str(huge), limits=ReadLimits(max_file_bytes=1000))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (len(data), size) == (1001, 1 << 30)
        assert result.quarantined[0].reason is QuarantineReason.FILE_TOO_LARGE
        assert result.quarantined[0].detail.startswith(f"{1 << 30} bytes")
        assert result.size_bytes == 1 << 30
        assert peak < 1 << 20  # before: the whole GiB was read, then rejected

    def test_a_small_file_costs_its_size_whatever_the_limit(self, data_file):
        tracemalloc.start()
        data, size = read_run_bytes(data_file("v4_kib.json"), 512 << 20)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert len(data) == size
        assert peak < 4 * size  # read(limit + 1) would allocate the 512 MiB limit for every file

    def test_a_file_that_grew_since_its_stat_is_read_to_the_limit(self, tmp_path):
        path = tmp_path / "growing.json"
        path.write_bytes(b"x" * 10)
        real_fstat = os.fstat

        def stale_fstat(descriptor):  # the size a stat taken before the last write saw
            result = list(real_fstat(descriptor))
            result[6] = 4  # st_size
            return os.stat_result(result)

        import agir_retrain.tasks.inputs as inputs

        inputs.os.fstat, saved = stale_fstat, inputs.os.fstat
        try:
            data, _size = read_run_bytes(str(path), 7)
        finally:
            inputs.os.fstat = saved
        assert data == b"x" * 8  # limit + 1: enough to tell the file is over the limit


class TestBoundedWalks:
    @pytest.fixture
    def looped(self, tmp_path) -> Path:
        """machine/{a,b}/*.json, with a link back up (a loop) and a second path to b."""
        root = tmp_path / "corpus"
        for name in ("a", "b"):
            (root / name).mkdir(parents=True)
            (root / name / f"{name}.json").write_text("{}")
        (root / "a" / "up").symlink_to(root)  # corpus/a/up/a/up/... never ends for glob.glob
        (root / "also_b").symlink_to(root / "b")
        return root

    @pytest.mark.timeout(60)
    @pytest.mark.parametrize("pattern", ["**/*.json", "*/*.json", "**"])
    def test_globs_over_a_link_loop_end_with_each_file_once(self, looped, pattern):
        files = expand_inputs([f"{looped}/{pattern}"])
        assert sorted(os.path.realpath(f.location) for f in files) == [
            str(looped / "a" / "a.json"),
            str(looped / "b" / "b.json"),
        ]
        # A file reached by several paths keeps its first path in sorted order.
        assert [f.location for f in files] == sorted(f.location for f in files)

    @pytest.mark.timeout(60)
    def test_folders_follow_links_once(self, looped):
        files = expand_inputs([str(looped)])
        assert _names(files) == ["a.json", "b.json"]
        assert files[1].location == str(looped / "also_b" / "b.json")  # sorts before b/b.json

    @pytest.mark.parametrize(
        "pattern", ["*.json", "*/*.json", "**/*.json", "**/x?.json", "[ab]/*", "a/**/*.json"]
    )
    def test_globs_match_what_glob_matches_on_a_plain_tree(self, tmp_path, pattern):
        for path in ("a/x1.json", "a/deep/x2.json", "b/y.json", "top.json", "a/.hidden.json"):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text("{}")
        expected = sorted(p for p in glob.glob(f"{tmp_path}/{pattern}", recursive=True)
                          if os.path.isfile(p))  # fmt: skip
        assert [f.location for f in expand_inputs([f"{tmp_path}/{pattern}"])] == expected

    def test_a_walk_of_many_files_takes_no_time_per_link(self, looped):
        for i in range(20):  # twenty links to the same folder: walked once
            (looped / f"link{i}").symlink_to(looped / "a")
        start = time.perf_counter()
        files = expand_inputs([f"{looped}/**/*.json"])
        assert time.perf_counter() - start < 5
        assert len(files) == 2


class TestDuplicates:
    def test_byte_identical_files_point_at_the_first(self, tmp_path):
        for name, text in [
            ("a.json", "{1}"),
            ("b.json", "{2}"),
            ("c.json", "{1}"),
            ("d.json", "{}"),
        ]:
            (tmp_path / name).write_text(text)
        files = mark_duplicates(expand_inputs([str(tmp_path)]))
        assert [(Path(f.location).name, f.duplicate_of) for f in files] == [
            ("a.json", None),
            ("b.json", None),
            ("c.json", str(tmp_path / "a.json")),
            ("d.json", None),
        ]

    def test_only_files_sharing_a_size_are_hashed(self, tmp_path):
        for name, text in [("a.json", "{1}"), ("b.json", "{22}"), ("c.json", "{333}")]:
            (tmp_path / name).write_text(text)
        hashed = []
        mark_duplicates(expand_inputs([str(tmp_path)]), lambda f: hashed.append(f) or "x")
        assert hashed == []
