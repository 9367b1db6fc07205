"""models.io: regular files only, capped reads, defensive npz reading, atomic writes, locks."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.io import (
    LOCK_FILE,
    TEMP_SUFFIX,
    FileError,
    FolderBusyError,
    Member,
    NpzLimits,
    RunLock,
    atomic_write_text,
    clean_stale_temporaries,
    content_hash,
    read_npz,
    read_text_capped,
    require_regular_file,
)


def test_non_regular_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    for check in (
        lambda: require_regular_file(fifo, "dataset"),
        lambda: read_text_capped(fifo, "--config"),
        lambda: read_npz(fifo, "dataset", [Member("a")]),
        lambda: content_hash(fifo),
    ):
        with pytest.raises(FileError, match=r"pipe\.npz: is a FIFO"):
            check()
    with pytest.raises(FileError, match="is a directory"):
        read_text_capped(tmp_path, "--config")
    with pytest.raises(FileError, match="no such file"):
        require_regular_file(tmp_path / "missing", "dataset")
    with pytest.raises(FileError, match="character device"):
        read_text_capped("/dev/zero", "--config")


def test_text_reads_are_capped(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_bytes(b"a = 1\n" * 100)
    assert read_text_capped(f, "--config").startswith("a = 1")
    with pytest.raises(FileError, match="longer than 100 bytes"):
        read_text_capped(f, "--config", limit=100)
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(FileError, match="not UTF-8"):
        read_text_capped(f, "--config")


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_read_npz_reads_the_defined_members(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    a = np.arange(6.0).reshape(2, 3)
    b = np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3))
    np.savez_compressed(path, a=a, **{"p/b": b}, m=np.array("text"))
    got = read_npz(path, "t", [Member("a", "f", (2,), True), Member("p/*", "i"), Member("m", "U")])
    np.testing.assert_array_equal(got["a"], a)
    np.testing.assert_array_equal(got["p/b"], b)
    assert got["m"][()] == "text"
    assert got["a"].flags.writeable


def test_read_npz_refuses_hostile_archives_before_decompressing(tmp_path: Path) -> None:
    def archive(name: str, members: dict[str, bytes], deflate: bool = False) -> Path:
        path = tmp_path / name
        method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
        with zipfile.ZipFile(path, "w", method) as z:
            for k, v in members.items():
                z.writestr(k, v)
        return path

    spec = [Member("a", "f", required=True)]
    ok = _npy(np.zeros(3))
    cases = {
        "unexpected member": archive("x.npz", {"a.npy": ok, "extra.npy": ok}),
        "missing member": archive("m.npz", {}),
        "object": archive("o.npz", {"a.npy": _npy(np.array([1, None], dtype=object))}),
        "expected float": archive("i.npz", {"a.npy": _npy(np.zeros(3, np.int64))}),
        "zip bomb": archive("bomb.npz", {"a.npy": _npy(np.zeros(1 << 22))}, deflate=True),
        "not an .npz": tmp_path / "text.npz",
    }
    (tmp_path / "text.npz").write_text("hello")
    # a header claiming 2 TiB, followed by a few bytes
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f8", "fortran_order": False, "shape": (1 << 38,)}
    )
    cases["2199023255552 bytes"] = archive("huge.npz", {"a.npy": head.getvalue() + b"\0" * 8})
    for match, path in cases.items():
        with pytest.raises(FileError, match=match):
            read_npz(path, "t", spec)
    with pytest.raises(FileError, match="more than the 16 allowed"):
        read_npz(archive("big.npz", {"a.npy": ok}), "t", spec, NpzLimits(max_member_bytes=16))


def test_atomic_write_and_stale_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    stale = tmp_path / f".metrics.json.abc{TEMP_SUFFIX}"
    stale.write_text("half")
    other = tmp_path / ".keep.tmp"
    other.write_text("not ours")
    assert clean_stale_temporaries(tmp_path) == [stale]
    assert not stale.exists() and other.exists() and target.read_text() == "two"


def test_atomic_write_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real.txt"
    real.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    atomic_write_text(link, "new")
    assert link.is_symlink() and real.read_text() == "new" and link.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_run_lock_is_exclusive_and_released_when_the_holder_dies(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        assert lock.held and (tmp_path / LOCK_FILE).exists()
        code = (
            "import sys; from models.io import RunLock, FolderBusyError\n"
            "try:\n    RunLock(sys.argv[1]).acquire()\n"
            "except FolderBusyError as e:\n    print(e); sys.exit(3)\n"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True
        )
        assert run.returncode == 3 and f"process {os.getpid()}" in run.stdout
    # a holder killed with SIGKILL leaves no lock behind
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from models.io import RunLock; RunLock({str(tmp_path)!r}).acquire()"
            "; print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(FolderBusyError):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunLock(tmp_path).acquire().release()


def test_content_hash(tmp_path: Path) -> None:
    f = tmp_path / "d.npz"
    f.write_bytes(b"abc")
    assert content_hash(f) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        3,
    )


def test_a_discarded_lock_file_is_removed_only_by_its_creator(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    RunLock(fresh).acquire().release(discard=True)
    assert not (fresh / LOCK_FILE).exists()
    # a lock file that was there before (an earlier run's) stays
    RunLock(fresh).acquire().release()
    assert (fresh / LOCK_FILE).exists()
    RunLock(fresh).acquire().release(discard=True)
    assert (fresh / LOCK_FILE).exists()


def test_a_lock_taken_on_a_removed_lock_file_is_not_a_second_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # B opens the lock file; A, its creator, removes it and releases; C creates a
    # new one and locks it. B's flock on the old file then succeeds, but B must see
    # that the path names another file now, and find C holding that one.
    a = RunLock(tmp_path).acquire()
    stale = os.open(tmp_path / LOCK_FILE, os.O_RDWR)
    a.release(discard=True)
    c = RunLock(tmp_path).acquire()
    b = RunLock(tmp_path)
    real_open = RunLock._open
    calls: list[int] = []

    def open_stale_first(self: RunLock) -> tuple[int, bool]:
        calls.append(1)
        return (stale, False) if len(calls) == 1 else real_open(self)

    monkeypatch.setattr(RunLock, "_open", open_stale_first)
    with pytest.raises(FolderBusyError):
        b.acquire()
    assert len(calls) == 2 and not b.held
    c.release()
    assert b.acquire().held
    b.release()
