"""Atomic writes (exporter.util.fsutil) and the stderr step reporter (exporter.util.progress)."""

from __future__ import annotations

import hashlib
import io
import os
import stat

import pytest

from exporter.util.fsutil import atomic_path, atomic_write_bytes, atomic_write_text, check_output_path, sha256_file
from exporter.util.progress import Progress
from models.errors import DeformRTError


def test_write_then_refuse_then_force(tmp_path):
    path = tmp_path / "a.bin"
    assert atomic_write_bytes(path, b"one") == path
    with pytest.raises(DeformRTError, match="already exists; pass --force"):
        atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"one"
    atomic_write_text(path, "three", force=True)
    assert path.read_text() == "three"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path, force=True) as tmp:
            assert tmp.parent == tmp_path and tmp != path
            tmp.write_bytes(b"half-written")
            raise RuntimeError("boom")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.onnx"]


def test_file_appearing_during_the_work_is_not_clobbered(tmp_path):
    path = tmp_path / "x.onnx"
    with pytest.raises(DeformRTError, match="appeared while writing"):
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"new")
            path.write_bytes(b"someone else's")
    assert path.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["x.onnx"]


def test_new_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "p.onnx", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_check_output_path_errors(tmp_path):
    with pytest.raises(DeformRTError, match="is a directory"):
        check_output_path(tmp_path)
    with pytest.raises(DeformRTError, match="does not exist"):
        check_output_path(tmp_path / "no" / "x.onnx")
    assert check_output_path(tmp_path / "ok.onnx") == tmp_path / "ok.onnx"


def test_progress_reports_steps_and_failures():
    stream = io.StringIO()
    progress = Progress(stream=stream)
    with progress.step("exporting"):
        pass
    with pytest.raises(ValueError):
        with progress.step("verifying"):
            raise ValueError("x")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[deformrt] exporting ..."
    assert lines[1].startswith("[deformrt] exporting: done in ") and lines[1].endswith(" s")
    assert lines[2] == "[deformrt] verifying ..."
    assert lines[3].startswith("[deformrt] verifying: failed after ")


def test_quiet_progress_prints_nothing(capsys):
    with Progress.quiet().step("anything"):
        Progress.quiet().info("hello")
    assert capsys.readouterr() == ("", "")


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_rewrites_the_step_line():
    stream = _Terminal()
    progress = Progress(stream=stream)
    with progress.step("exporting"):
        pass
    with progress.step("verifying"):
        progress.info("seed 3")  # a line inside a step closes the open start line first
    with pytest.raises(RuntimeError):
        with progress.step("writing"):
            raise RuntimeError("disk full")
    lines = stream.getvalue().split("\n")
    assert lines[0] == "[deformrt] exporting ...\r\x1b[K[deformrt] exporting: done in 0.0 s"
    assert lines[1:4] == ["[deformrt] verifying ...", "[deformrt] seed 3", "[deformrt] verifying: done in 0.0 s"]
    assert lines[4].startswith("[deformrt] writing ...\r\x1b[K[deformrt] writing: failed after")


def test_sha256_file(tmp_path):
    path = tmp_path / "blob"
    data = bytes(range(256)) * 5000
    path.write_bytes(data)
    assert sha256_file(path, chunk=4096) == hashlib.sha256(data).hexdigest()
