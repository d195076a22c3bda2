"""Sources and outputs named by URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``), through pyarrow.fs.

Any other scheme (``https://``, ``hf://``, ``memory://``, ...) goes through fsspec when the
``fsspec`` extra is installed, wrapped as a pyarrow filesystem
(``PyFileSystem(FSSpecHandler(...))``), so it streams and reads Parquet by ranges like the rest.

pyarrow's filesystem layer does the work: ``FileSystem.from_uri`` picks the filesystem and
takes its settings from the URI and the environment (S3: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, and
``AWS_ENDPOINT_URL`` for S3-compatible stores; GCS: ``GOOGLE_APPLICATION_CREDENTIALS``;
HDFS: ``HADOOP_HOME`` / ``ARROW_LIBHDFS_DIR``). Everything here names the URI the user
wrote in its errors.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import urllib.parse

from lossctl.errors import DataError, short_reason

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

_HINTS = {
    "s3": "s3:// takes credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (AWS_ENDPOINT_URL for an "
    "S3-compatible store, AWS_DEFAULT_REGION for the region)",
    "gs": "gs:// takes credentials from GOOGLE_APPLICATION_CREDENTIALS (a service-account key file)",
    "hdfs": "hdfs:// needs Hadoop's libhdfs and a JVM (HADOOP_HOME, JAVA_HOME, ARROW_LIBHDFS_DIR)",
}


def _hint(uri: str) -> str:
    scheme = uri.split("://", 1)[0].lower()
    scheme = "gs" if scheme == "gcs" else scheme
    return _HINTS.get(
        scheme,
        "pyarrow reads s3://, gs://, hdfs:// and file://; other schemes (https://, hf://, memory://, ...) "
        "go through fsspec (pip install 'lossctl[fsspec]')",
    )


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


# Schemes whose paths inside the filesystem are "bucket/key" (the rest: the URI's path).
_BUCKETED = ("s3", "gs", "gcs")


@functools.lru_cache(maxsize=64)
def _filesystem(root: str):
    """One filesystem per bucket / host (S3 looks up the bucket's region once, not per file)."""
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(root)[0]


# Schemes pyarrow serves itself; every other one goes through fsspec.
_NATIVE = (*_BUCKETED, "file", "hdfs", "viewfs")


@functools.lru_cache(maxsize=64)
def _fsspec_filesystem(protocol: str, options: tuple):
    import fsspec
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return PyFileSystem(FSSpecHandler(fsspec.filesystem(protocol, **dict(options))))


def _via_fsspec(uri: str):
    scheme = uri.split("://", 1)[0].lower()
    try:
        import fsspec
    except ImportError:
        raise DataError(
            f"{uri}: {scheme}:// is read through fsspec, which is not installed; "
            "install it with pip install 'lossctl[fsspec]'."
        ) from None
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except (ImportError, ValueError) as exc:
        raise DataError(f"{uri}: cannot open this URI ({short_reason(exc)}). {_hint(uri)}.") from None
    options = cls._get_kwargs_from_urls(uri) if hasattr(cls, "_get_kwargs_from_urls") else {}
    path = cls._strip_protocol(uri)
    if scheme in ("http", "https"):
        path = uri  # fsspec's HTTP filesystem addresses files by their whole URL
        # Read-ahead blocks of 256 KiB (fsspec's default is 5 MiB, which fetches a whole small file
        # to read a Parquet footer); Parquet still reads only the column chunks it needs.
        options.setdefault("block_size", 1 << 18)
    return _fsspec_filesystem(scheme, tuple(sorted(options.items()))), path


def resolve(uri: str):
    """(filesystem, path inside it) for ``uri``; a clear error when the scheme cannot be served."""
    import pyarrow.fs as pafs

    u = urllib.parse.urlsplit(uri)
    if u.scheme.lower() not in _NATIVE:
        return _via_fsspec(uri)
    try:
        if u.scheme in _BUCKETED or u.scheme in ("file", "hdfs", "viewfs"):
            root = f"{u.scheme}://{u.netloc}/" + (f"?{u.query}" if u.query else "")
            path = u.netloc + u.path if u.scheme in _BUCKETED else u.path
            return _filesystem(root), urllib.parse.unquote(path)
        return pafs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - unknown scheme, missing libhdfs, bad URI
        raise DataError(f"{uri}: cannot open this URI ({short_reason(exc)}). {_hint(uri)}.") from None


def kind(uri: str) -> str:
    """'file', 'dir' or 'missing'."""
    import pyarrow.fs as pafs

    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001 - no credentials, no network, no bucket
        raise DataError(f"{uri}: cannot look it up ({short_reason(exc)}). {_hint(uri)}.") from None
    if info.type == pafs.FileType.File:
        return "file"
    if info.type == pafs.FileType.Directory:
        return "dir"
    return "missing"


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


def listing(uri: str) -> list[str]:
    """The files under a directory URI (recursively) or matching a glob URI, as URIs, sorted.

    Names starting with ``.`` or ``_`` (``_SUCCESS``, ``.crc`` files) are skipped, as for local
    directories.
    """
    import pyarrow.fs as pafs

    scheme_end = _URI.match(uri).end()
    prefix, rest = uri[:scheme_end], uri[scheme_end:]
    globbed = any(ch in rest for ch in "*?[")
    if globbed:
        cut = min(rest.index(ch) for ch in "*?[" if ch in rest)
        root_rest = rest[: rest.rfind("/", 0, cut) + 1] if "/" in rest[:cut] else ""
    else:
        root_rest = rest
    fs, root = resolve(prefix + root_rest.rstrip("/") if root_rest else uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{uri}: cannot list it ({short_reason(exc)}). {_hint(uri)}.") from None
    # Listed paths are inside the filesystem; give them back as URIs under the same prefix.
    head = (prefix + root_rest.rstrip("/")) if root_rest else prefix
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(root.rstrip("/")) :].lstrip("/") if info.path.startswith(root.rstrip("/")) else info.path
        if any(part.startswith((".", "_")) for part in rel.split("/")):
            continue
        full = join(head, rel)
        if globbed and not fnmatch.fnmatchcase(full, uri):
            continue
        out.append(full)
    return sorted(out)


def open_input_file(uri: str, display: str):
    """A random-access pyarrow file for ``uri`` (Parquet footers, Arrow IPC)."""
    fs, path = resolve(uri)
    try:
        return fs.open_input_file(path)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display}: cannot open ({short_reason(exc)}). {_hint(uri)}.") from None


def open_input_stream(uri: str, display: str, compression: str | None = "detect"):
    fs, path = resolve(uri)
    try:
        return fs.open_input_stream(path, compression=compression)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{display}: cannot open ({short_reason(exc)}). {_hint(uri)}.") from None
