"""Atomic writes of user artifacts (ONNX files, engines, reports).

A write goes to a temporary file in the destination's directory and is moved into place with
``os.replace`` only once it is complete, so a failed or interrupted export never leaves a
truncated file behind. An existing destination is refused unless ``force`` is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Union

from models.errors import DeformRTError

PathLike = Union[str, os.PathLike]


def _writable_parent(out: Path) -> Path:
    """The directory ``out`` will be written in; DeformRTError when it is missing or not writable."""
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise DeformRTError(f"cannot write {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DeformRTError(f"cannot write {out}: directory {parent} is not writable")
    return parent


def check_output_path(path: PathLike, force: bool = False) -> Path:
    """Fail early (DeformRTError) unless ``path`` can be written: not existing (or ``force``) and a
    writable parent directory. Returns the path as a Path."""
    out = Path(path)
    if out.is_dir():
        raise DeformRTError(f"output {out} is a directory; give a file name")
    if out.exists() and not force:
        raise DeformRTError(f"output {out} already exists; pass --force to overwrite it")
    _writable_parent(out)
    return out


def check_output_directory(path: PathLike, force: bool = False) -> Path:
    """Fail early (DeformRTError) unless the folder ``path`` can be written as a whole: not existing
    (or ``force``) and a writable parent directory. Returns the path as a Path."""
    out = Path(path)
    if (out.exists() or out.is_symlink()) and not force:
        raise DeformRTError(f"output {out} already exists; pass --force to replace it")
    _writable_parent(out)
    return out


@contextlib.contextmanager
def atomic_path(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit move it onto ``path``.

    The caller writes the complete artifact to the yielded path. On an exception the temporary
    file is removed and ``path`` is left untouched. Without ``force`` an existing ``path`` is
    refused, checked both before and after the work.
    """
    out = check_output_path(path, force)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates the file 0600; give the artifact the usual permissions for a new file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if out.exists() and not force:
            raise DeformRTError(f"output {out} appeared while writing; pass --force to overwrite it")
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: PathLike, data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    with atomic_path(path, force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: PathLike, text: str, force: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`); return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), force)


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints and engines can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_directory(path: PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on normal exit move it onto ``path``.

    The directory counterpart of :func:`atomic_path`: on an exception the temporary directory is
    removed and ``path`` is left untouched. An existing ``path`` (file or directory) is refused
    unless ``force``; with ``force`` it is replaced only once the new directory is complete.
    """
    out = check_output_directory(path, force)
    parent = _writable_parent(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it 0700
    try:
        yield tmp
        if out.exists() or out.is_symlink():
            if not force:
                raise DeformRTError(f"output {out} appeared while writing; pass --force to replace it")
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
