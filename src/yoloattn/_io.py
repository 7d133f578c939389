"""Ground-floor file helpers, owned once: atomic writes.

Every file yoloattn writes that a later run reads (weights, sidecars, training state, run-folder
YAML/JSON, scan caches) goes through :func:`atomic_paths`: the content is written to a temporary
file in the target's folder and moved into place with ``os.replace``, so a kill at any moment
leaves either the old file or the new one, never a torn one.

>>> from pathlib import Path
>>> import tempfile
>>> p = Path(tempfile.mkdtemp()) / "a.txt"
>>> write_text_atomic(p, "hello")
>>> p.read_text()
'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_paths", "write_text_atomic", "write_bytes_atomic", "umask"]


def umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Temporary paths for ``paths``; on a clean exit they replace the targets, in order.

    The temporary files live beside their targets (same file system, so ``os.replace`` is
    atomic) and get ordinary permissions (``0o666`` minus the umask). On an exception every
    temporary file is removed and the targets are untouched. With several paths the targets are
    replaced in the order given: a kill between two replacements leaves the first new and the
    rest old, so put the file that readers check last at the end.
    """
    targets = [Path(p) for p in paths]
    tmps: list[Path] = []
    try:
        for p in targets:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            os.close(fd)
            tmps.append(Path(tmp_name))
        yield list(tmps)
        mode = 0o666 & ~umask()
        for tmp in tmps:
            os.chmod(tmp, mode)  # mkstemp makes 0600; these are ordinary files
        for tmp, p in zip(tmps, targets):
            os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        tmp.write_text(text, encoding=encoding)


def write_bytes_atomic(path: str | Path, data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        tmp.write_bytes(data)
