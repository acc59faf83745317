"""Handing a cluster job's stage outputs back to the checkout that submitted it.

A submitted job runs in a throwaway copy of the project on the cluster, so whatever its
stages write would vanish with it. Before it ends, the job copies the outputs of the
stages it ran (plus dvc.lock and params.yaml) to storage that both sides reach: s3://,
gs://, or a filesystem mounted on both. `_SUCCESS` is written last and lists every path
with its hash, so a reader never takes a half-copied set for a finished one. The
submitting side checks each hash and swaps each path into its checkout atomically, which
leaves the checkout exactly as if the stages had run locally; DVC then caches them.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from pathlib import Path
from typing import Any

from seqmodels import storage
from seqmodels.errors import ClusterError, SeqmodelsError
from seqmodels.publish import hash_path, publishing, write_bytes_atomic

SUCCESS = "_SUCCESS"


def _filesystem(uri: str):
    """(pyarrow filesystem, root path) for a URI or a local path (seqmodels.storage: the
    S3 endpoint and region from the environment, as everywhere else)."""
    try:
        return storage.filesystem(uri)
    except SeqmodelsError as error:
        raise ClusterError(f"cannot open results storage {uri}: {error.what}", where="--results",
                           fix="use s3://bucket/prefix, gs://bucket/prefix or an absolute shared path"
                           ) from None


def upload(root: Path, paths: list[str], uri: str, stages: list[str]) -> dict[str, Any]:
    """Copy `paths` (relative to `root`; files or folders) to `uri`, then write `_SUCCESS`."""
    import pyarrow.fs

    filesystem, base = _filesystem(uri)
    local = pyarrow.fs.LocalFileSystem()
    filesystem.create_dir(base, recursive=True)
    hashes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for relative in paths:
        source = root / relative
        if not source.exists():
            continue  # e.g. a plots folder a stage did not write for this modality
        destination = posixpath.join(base, relative)
        if source.is_dir():
            filesystem.create_dir(destination, recursive=True)
        else:
            filesystem.create_dir(posixpath.dirname(destination), recursive=True)
        pyarrow.fs.copy_files(str(source), destination, source_filesystem=local,
                              destination_filesystem=filesystem)
        hashes[relative] = hash_path(source)
        kinds[relative] = "dir" if source.is_dir() else "file"
    manifest = {"stages": stages, "paths": hashes, "kinds": kinds}
    with filesystem.open_output_stream(posixpath.join(base, SUCCESS)) as stream:
        stream.write(json.dumps(manifest, indent=2, sort_keys=True).encode())
    return manifest


def read_manifest(uri: str) -> dict[str, Any]:
    import pyarrow.fs

    filesystem, base = _filesystem(uri)
    marker = posixpath.join(base, SUCCESS)
    if filesystem.get_file_info(marker).type == pyarrow.fs.FileType.NotFound:
        raise ClusterError(
            f"no finished results at {uri} ({SUCCESS} is missing)", where=uri,
            fix="the job did not finish, or wrote to storage this machine cannot see: on a remote "
                "cluster pass --results s3://..., gs://... or a path mounted on both sides")
    with filesystem.open_input_stream(marker) as stream:
        return json.loads(stream.read())


def download(uri: str, root: Path) -> dict[str, Any]:
    """Put every path of a finished job under `root`, each checked and swapped in atomically."""
    import pyarrow.fs

    manifest = read_manifest(uri)
    filesystem, base = _filesystem(uri)
    local = pyarrow.fs.LocalFileSystem()
    for relative, expected in manifest["paths"].items():
        source = posixpath.join(base, relative)
        target = root / relative
        if manifest["kinds"][relative] == "dir":
            with publishing(target) as staging:
                pyarrow.fs.copy_files(source, str(staging), source_filesystem=filesystem,
                                      destination_filesystem=local)
                _check_hash(hash_path(staging), expected, source)
        else:
            with filesystem.open_input_stream(source) as stream:
                content = stream.read()
            _check_hash(hashlib.sha256(content).hexdigest(), expected, source)  # = hash_path of a file
            write_bytes_atomic(target, content)
    return manifest


def _check_hash(actual: str, expected: str, source: str) -> None:
    if actual != expected:
        raise ClusterError(f"{source} changed or is incomplete (hash mismatch)", where=source,
                           fix="rerun the job; nothing in the checkout was replaced")


def default_results_uri(storage: str, job_id: str) -> str:
    """Next to the Ray Train run storage: shared by construction on a real cluster."""
    if "://" in storage:
        return f"{storage.rstrip('/')}/jobs/{job_id}"
    return os.path.join(str(Path(storage).resolve()), "jobs", job_id)
