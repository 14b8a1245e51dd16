"""Where runs live, and the one filesystem layer that reads them (local paths, s3://, gs:// alike).

The storage root is `--storage_path` (or `--save_dir`), else `$HRM_RAY_STORAGE` read where the job runs,
else `~/hrm-ray/runs`: never the working directory, which under `ray job submit` is the uploaded package
(`.../_ray_pkg_<hash>/`), a new one whenever the package changes. A relative path the user gives resolves
against the directory the command runs in; inside a job's package it cannot name the user's directory, so a
relative storage root goes under `$HRM_RAY_STORAGE`/the default, and a relative input that is not in the
package is a UserError. Remote URIs go through pyarrow's filesystems, as Ray's own storage does.
"""
from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

from hrm_ray.errors import UserError

STORAGE_ENV = "HRM_RAY_STORAGE"
DEFAULT_STORAGE = "~/hrm-ray/runs"
JOB_CACHE = "~/hrm-ray"  # data a job builds for itself (the demo's), when run inside a job's package
REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "abfs://", "az://")
JOB_PACKAGE_MARK = "_ray_pkg_"


def is_remote(uri: str) -> bool:
    return str(uri).startswith(REMOTE_SCHEMES)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_remote(base) else str(Path(base, *parts))


def in_job_package() -> bool:
    """True inside a Ray job's uploaded package, where the working directory is not the user's."""
    return JOB_PACKAGE_MARK in os.getcwd() or bool(os.environ.get("RAY_JOB_ID"))


def _absolute(path: str) -> str:
    return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def default_root() -> str:
    """`$HRM_RAY_STORAGE`, else `~/hrm-ray/runs` (absolute)."""
    return _absolute(os.environ.get(STORAGE_ENV, "") or DEFAULT_STORAGE)


def resolve_root(explicit: str = "") -> tuple[str, str | None]:
    """(the storage root, a note for the log when a relative root was moved out of a job's package)."""
    if not explicit:
        return default_root(), None
    relative = not is_remote(explicit) and not os.path.isabs(os.path.expanduser(explicit))
    if relative and in_job_package():
        root = join(default_root(), explicit)
        return root, (f"storage: '{explicit}' is relative and this runs inside a Ray job's package "
                      f"({os.getcwd()}): runs go to {root}")
    return _absolute(explicit), None


def resolve_input(path: str, flag: str) -> str:
    """An input path (`--dataset`, `--init_from`) made absolute; inside a job's package a relative one must
    be in the package (a UserError otherwise: the user's directory is not on this machine)."""
    if is_remote(path) or os.path.isabs(os.path.expanduser(path)):
        return _absolute(path)
    absolute = os.path.abspath(path)
    if in_job_package() and not os.path.exists(absolute):
        raise UserError(f"{flag} {path}: not found in the Ray job's package ({os.getcwd()}); under `ray job "
                        f"submit` a relative path cannot name your directory: pass an absolute path or an "
                        f"s3://, gs:// URI")
    return absolute


def built_data_path(path: str, storage_root: str) -> str:
    """Where data the job builds itself (demo data) goes: `path` made absolute, except that inside a job's
    package (replaced whenever it changes) a relative one goes under the storage root, ~/hrm-ray/ when that
    root is remote."""
    if is_remote(path) or os.path.isabs(os.path.expanduser(path)) or not in_job_package():
        return _absolute(path)
    base = os.path.expanduser(JOB_CACHE) if is_remote(storage_root) else storage_root
    return os.path.join(base, path)


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a local path or URI. s3:// honours `$AWS_ENDPOINT_URL_S3` /
    `$AWS_ENDPOINT_URL` (an S3-compatible store), which pyarrow's own URI parsing ignores."""
    import pyarrow.fs as pafs

    if not is_remote(uri):
        return pafs.LocalFileSystem(), os.path.abspath(uri)
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if uri.startswith("s3://") and endpoint:
        return _s3(endpoint, os.environ.get("AWS_REGION", "")), uri[len("s3://"):]
    return pafs.FileSystem.from_uri(uri)


@functools.lru_cache(maxsize=4)
def _s3(endpoint: str, region: str):
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=endpoint, region=region or None)


STORE_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN")


def store_env() -> dict[str, str]:
    """The object-store settings of this process's environment, for the Ray processes it starts work in (Ray
    workers inherit their node's environment, not the driver's): an S3-compatible endpoint set in the
    user's shell reaches the workers that write run files there."""
    return {name: os.environ[name] for name in STORE_ENV if name in os.environ}


def adopt_store_env(env: dict[str, str]) -> None:
    """Take the driver's object-store settings (`store_env`) in a Ray worker; the node's own settings win."""
    for name, value in env.items():
        os.environ.setdefault(name, value)


def ray_storage(root: str) -> dict:
    """RunConfig's storage arguments for `root`: the path as it is, or for s3:// on an S3-compatible store
    (`$AWS_ENDPOINT_URL`), the filesystem of hrm_ray.storage and the path inside it (Ray's own URI parsing
    would go to AWS)."""
    if not is_remote(root):
        return {"storage_path": root}
    fs, path = filesystem(root)
    return {"storage_path": path, "storage_filesystem": fs}


def _info(uri: str):
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise UserError(f"{uri}: cannot read it ({exc})") from None


def exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    return _info(uri).type != pafs.FileType.NotFound


def is_dir(uri: str) -> bool:
    import pyarrow.fs as pafs

    return _info(uri).type == pafs.FileType.Directory


def is_file(uri: str) -> bool:
    import pyarrow.fs as pafs

    return _info(uri).type == pafs.FileType.File


def file_size(uri: str) -> int:
    return _info(uri).size


def delete_dir(uri: str) -> None:
    fs, path = filesystem(uri)
    fs.delete_dir(path)


def list_names(uri: str) -> list[str]:
    """Names directly under the directory `uri` (empty when there is none)."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as exc:
        raise UserError(f"{uri}: cannot list it ({exc})") from None
    return sorted(info.base_name for info in infos)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode()


def open_input_file(uri: str):
    """A seekable file of `uri` (a Parquet shard, local or in a store)."""
    fs, path = filesystem(uri)
    return fs.open_input_file(path)


def write_bytes(uri: str, data: bytes) -> None:
    """Write one whole file, local (its directory must exist) or in a store (one PUT: whole or absent)."""
    if not is_remote(uri):
        Path(uri).write_bytes(data)
        return
    fs, path = filesystem(uri)
    with fs.open_output_stream(path) as stream:
        stream.write(data)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode())


def remove_tree(uri: str) -> bool:
    """Best-effort removal of a directory or prefix (a failed job's objects); False when it could not be."""
    try:
        if exists(uri):
            delete_dir(uri)
        return True
    except (OSError, UserError):
        return False


def localize(uri: str, local: Path | None = None) -> Path:
    """A local file or directory holding `uri`: the path itself when local, else a copy at `local` (default:
    in a new temporary directory, left to the OS's temp cleanup)."""
    if not is_remote(uri):
        return Path(uri)
    import pyarrow.fs as pafs

    local = local or Path(tempfile.mkdtemp(prefix="hrm-ray-")) / Path(uri.rstrip("/")).name
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        if is_dir(uri):
            fs, path = filesystem(uri)
            local.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(path, str(local), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        else:
            local.write_bytes(read_bytes(uri))
    except OSError as exc:
        shutil.rmtree(local, ignore_errors=True)
        raise UserError(f"{uri}: cannot copy it from storage ({exc})") from None
    return local


def localize_tree(uri: str, skip: tuple[str, ...] = ()) -> Path:
    """A local copy of the remote directory `uri` without the folders whose names start with one of `skip`
    (a run's checkpoints, for a report), in a new temporary directory."""
    import pyarrow.fs as pafs

    fs, root = filesystem(uri)
    local = Path(tempfile.mkdtemp(prefix="hrm-ray-")) / root.rstrip("/").rsplit("/", 1)[-1]
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        for info in infos:
            rel = info.path[len(root.rstrip("/")) + 1:]
            if info.type != pafs.FileType.File or any(part.startswith(skip) for part in rel.split("/")[:-1]):
                continue
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as stream:
                (local / rel).write_bytes(stream.read())
    except OSError as exc:
        raise UserError(f"{uri}: cannot copy it from storage ({exc})") from None
    return local


def upload(local_dir: str | Path, uri: str, last: str = "") -> None:
    """Copy the local directory `local_dir` to `uri` (a remote destination); its top-level file `last`
    (meta.json: what readers require) only once everything else is there."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    if not last:
        pafs.copy_files(str(local_dir), path, destination_filesystem=fs)
        return
    fs.create_dir(path)
    for entry in sorted(Path(local_dir).iterdir(), key=lambda p: p.name == last):
        pafs.copy_files(str(entry), f"{path}/{entry.name}", destination_filesystem=fs)
