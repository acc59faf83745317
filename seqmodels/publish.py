"""Publishing artifacts so that a killed or failing stage never loses the previous good one.

Everything a stage produces is first written into a hidden temporary sibling of its
target, checked, and then swapped in with renames on the same filesystem. Readers see
either the old complete artifact or the new complete one, never a half-written mix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from seqmodels.errors import OutputError

MANIFEST = "_manifest.json"

# OS errors that mean "this location cannot take the output": the user can act on them
# (free space, fix permissions, choose another path), unlike a bug, which keeps its traceback.
_NO_SPACE = "free space on the file system holding {dir} (or point paths.* elsewhere)"
_NO_ACCESS = "make {dir} writable for this user (or point paths.* elsewhere)"
WRITE_FAILURES = {errno.ENOSPC: ("disk full", _NO_SPACE),
                  errno.EDQUOT: ("disk quota exceeded", _NO_SPACE),
                  errno.EFBIG: ("file too large", "lift the file size limit (ulimit -f) or point paths.* "
                                                  "at a file system that takes larger files"),
                  errno.EACCES: ("permission denied", _NO_ACCESS),
                  errno.EPERM: ("permission denied", _NO_ACCESS),
                  errno.EROFS: ("read-only file system", _NO_ACCESS)}


def output_error(error: OSError, target: str | Path) -> OutputError | None:
    """The user-facing form of a failed write to `target`, or None for other OS errors."""
    if error.errno not in WRITE_FAILURES:
        return None
    reason, fix = WRITE_FAILURES[error.errno]
    location = Path(error.filename) if error.filename else Path(target)
    return OutputError(f"cannot write {target}: {reason} ({error.strerror or error})", where=str(location),
                       fix=fix.format(dir=location.parent) + " and rerun; the previously published "
                       "version is unchanged")


def _reraise_for(error: OSError, target: str | Path) -> NoReturn:
    converted = output_error(error, target)
    if converted is None:
        raise error
    raise converted from None


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a small text file via a temporary sibling and os.replace (atomic on POSIX)."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: str | Path, content: bytes) -> None:
    """Write a file via a temporary sibling and os.replace (atomic on POSIX)."""
    with writing_file(path) as tmp, open(tmp, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def writing_file(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to write into, for files written in pieces (a Parquet
    file streamed row group by row group). On clean exit it replaces `path` in one
    os.replace; on an exception it is removed and `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as error:
        _reraise_for(error, path)
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are readable
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            _reraise_for(error, path)
        raise


def write_json_atomic(path: str | Path, payload: Any) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


@contextlib.contextmanager
def publishing(target: str | Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on clean exit it replaces `target` in one swap.

    On an exception the staging directory is removed and `target` is untouched; a write
    that fails for lack of space or permission becomes an OutputError naming the path.
    """
    target = Path(target)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:8]}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except OSError as error:
        _reraise_for(error, target)
    try:
        yield staging
        swap_into_place(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError):
            _reraise_for(error, target)
        raise


def swap_into_place(staging: Path, target: Path) -> None:
    """Replace `target` by `staging`: two renames, the old copy deleted only afterwards."""
    retired = target.parent / f".{target.name}.retired-{uuid.uuid4().hex[:8]}"
    if target.exists() or target.is_symlink():
        os.rename(target, retired)
    try:
        os.rename(staging, target)
    except BaseException:
        if retired.exists():
            os.rename(retired, target)
        raise
    if retired.exists() or retired.is_symlink():
        if retired.is_dir() and not retired.is_symlink():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            retired.unlink()


def clean_stale_staging(target: str | Path) -> None:
    """Remove staging/retired leftovers of a killed run (never the published target)."""
    target = Path(target)
    if not target.parent.exists():
        return
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def hash_path(path: str | Path) -> str:
    """sha256 over a file, or over a directory's relative names and contents (sorted)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def git_revision(cwd: str | Path = ".") -> dict[str, Any]:
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                    capture_output=True, text=True, check=True).stdout.strip())
        return {"commit": rev, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions(names: tuple[str, ...] = ("seqmodels", "torch", "ray", "pyarrow", "pandas",
                                                "pandera", "dvc")) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(**fields: Any) -> dict[str, Any]:
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_revision(),
        "versions": package_versions(),
        **fields,
    }
