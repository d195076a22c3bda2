"""The Dask engine (``engine="dask"``): one run split into tasks that Dask workers execute; the client merges states.

lossctl grows no scheduler of its own. The client (the ``lossctl compute`` process) plans and
merges; Dask's workers read and compute:

1. The client checks the sources, columns and parameters (schemas only) and lists each input's
   Parquet files: one file, a directory or glob of shards, or their ``s3://`` / ``gs://`` /
   ``hdfs://`` URIs.
2. Workers read the Parquet footers: the row count of every row group.
3. The client cuts the global rows into tasks. A task's ends are row-group boundaries of every
   input (each input reads whole row groups), it stays within one file of the first input
   (tasks follow the shards), holds about ``TASK_ROWS`` rows, and for batched losses starts on
   a batch boundary. Inputs in different files are paired by global row, as the local engine
   pairs them by position.
4. Each task runs the local engine on its rows (numbered globally, so bootstrap weights, top-K
   rows and error messages are those of one run), writes its per-sample rows as
   ``part-NNNNN.parquet`` when asked, and returns its mergeable state (``RunState``).
5. The client merges the states in task order (so the result does not depend on which worker
   finished first) and builds the same report as the local engine.

Nothing per-sample passes through the client, and it never reads the data itself.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from lossctl.errors import DataError, UsageError, opt, short_reason
from lossctl.io.outputs import current_outputs
from lossctl.io.remote import is_uri
from lossctl.io.sinks import SINK_FORMATS
from lossctl.io.sources import Source

TASK_ROWS = 1 << 20  # consecutive row groups of one file are grouped up to about this many rows
PART = "part-{:05d}.parquet"


@dataclass
class Task:
    index: int
    start: int  # global row of the task's first row
    stop: int
    sources: list[Source | None]  # one per loss input role (None: an optional input not given)


# ---------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------


def _distributed():
    try:
        import distributed
    except ImportError:
        raise UsageError(
            f"{opt('engine')} dask needs Dask's distributed scheduler, which is an optional extra: "
            "pip install 'lossctl[dask]'."
        ) from None
    return distributed


def connect(scheduler: str | None, workers: int | None):
    """A ``distributed.Client``: to a running scheduler, or to a local cluster of ``workers`` processes."""
    distributed = _distributed()
    if scheduler and workers:
        raise UsageError(
            f"{opt('scheduler')} connects to a running cluster and {opt('workers')} starts one; give one of them."
        )
    if scheduler:
        try:
            # Dask's connect timeout applies (distributed.comm.timeouts.connect, 30 s unless configured).
            return distributed.Client(scheduler), None
        except (OSError, TimeoutError) as exc:
            raise DataError(
                f"{opt('scheduler')} {scheduler}: cannot connect ({short_reason(exc)}). "
                "Expected the address of a running Dask scheduler (`dask scheduler` prints it), e.g. tcp://host:8786."
            ) from None
    if workers is not None and workers < 1:
        raise UsageError(f"{opt('workers')} must be at least 1; got {workers}.")
    n = workers or os.cpu_count() or 1
    saved = dict(os.environ)  # LocalCluster sets OMP_NUM_THREADS=1 etc. for its workers, in this process too
    try:
        cluster = _local_cluster(distributed, n)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return distributed.Client(cluster), cluster


def _local_cluster(distributed, n: int):
    return distributed.LocalCluster(
        n_workers=n,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",  # any free port: never a clash with another cluster
        silence_logs=logging.CRITICAL,  # failures reach the client as task errors; shutdown noise stays out of stderr
    )


# ---------------------------------------------------------------------------
# Work done on the workers
# ---------------------------------------------------------------------------


def row_group_rows(path: str) -> list[int]:
    """Rows in each row group of one Parquet file (its footer only; the reader's errors)."""
    from lossctl.io.sources import ParquetReader

    md = ParquetReader(Source(path, path, None, "parquet")).pf.metadata
    return [md.row_group(i).num_rows for i in range(md.num_row_groups)]


def run_task(
    name: str,
    texts: list,
    params: dict,
    opts,
    task: Task,
    per_sample_dir: str | None,
    cancel: str | None = None,
    total: int = 0,
) -> dict:
    """Run the local engine on one task's rows; return its state (and write its per-sample part).

    When the whole run has more rows than are kept for exact quantiles, its result is a
    quantile sketch whatever the tasks send, so a task sends its sketch (kilobytes) instead of
    its values (8 bytes a row): the same sketch buckets, far less through the client.
    """
    from lossctl import registry
    from lossctl.stages.runner import Run

    spec = registry.get(name)
    target = None
    if per_sample_dir is not None:
        # (a URI directory: the sink writes a local temporary file and uploads it on success)
        target = _join(per_sample_dir, PART.format(task.index))
        opts = replace(opts, per_sample=target)
    r = Run(spec, texts, params, opts, sources=task.sources)
    report = r.execute()
    if total > r.acc.all.stats.exact_limit:
        r.acc.all.stats.to_sketch()
    if target is not None and cancel is not None and _cancelled(cancel):
        _remove(target)  # the run was stopped while this task ran: leave nothing behind
    shapes = [list(i.shape) if i.shape else None for i in r.inputs]
    return {
        "meta": r.meta(),
        "state": r.acc,
        "shapes": shapes,
        "per_sample_rows": report.get("per_sample", {}).get("rows", 0),
    }


def _cancelled(name: str) -> bool:
    try:
        import distributed

        return distributed.Event(name).is_set()
    except Exception:  # noqa: BLE001 - not on a worker, or the scheduler is gone: not cancelled by us
        return False


def _remove(path: str) -> None:
    try:
        if is_uri(path):
            from lossctl.io.remote import resolve

            fs, p = resolve(path)
            fs.delete_file(p)
        else:
            os.unlink(path)
    except Exception:  # noqa: BLE001 - best effort
        pass


class _Interrupts:
    """Ctrl-C during a dask run sets a flag that the client's loop checks (``check`` raises
    KeyboardInterrupt there): an interrupt raised inside Dask's client code can be swallowed."""

    def __init__(self):
        import signal
        import threading

        self._flag = threading.Event()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, lambda *_: self._flag.set())

    def check(self) -> None:
        if self._flag.is_set():
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


# ---------------------------------------------------------------------------
# Planning (on the client)
# ---------------------------------------------------------------------------


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name if is_uri(directory) else os.path.join(directory, name)


def _parquet_files(reader, source: Source) -> tuple[list[str], str | None, Any]:
    """(files, hive base, dataset schema) of one input; only Parquet is split into tasks."""
    if source.is_stdin:
        raise UsageError(
            f"{opt('engine')} dask reads Parquet files, directories or globs of shards (local or s3://, gs://, "
            f"hdfs://); stdin cannot be split among workers. Use {opt('engine')} local."
        )
    # Local paths are made absolute: workers need not share the client's working directory.
    here = (lambda p: p) if source.is_remote else os.path.abspath
    if source.fmt == "parquet":
        return [here(source.path)], None, None
    if source.fmt == "dataset" and getattr(reader, "fmt", None) == "parquet":
        return [here(f) for f in reader.files], here(reader.base), reader.ds.schema
    what = "Arrow/CSV shards" if source.fmt == "dataset" else f"a {source.fmt.upper()} file"
    raise UsageError(
        f"{source.display} is {what}: {opt('engine')} dask splits Parquet files and directories or globs of "
        f"Parquet shards (by row group) among workers. Convert it to Parquet, or use {opt('engine')} local."
    )


def plan(
    spec, texts: list, sources: list[Source | None], readers: dict[str, Any], footers: dict[str, list[int]], batch_size
) -> tuple[list[Task], int]:
    """Cut the inputs' global rows into tasks (see the module docstring). Returns (tasks, total rows)."""
    keys = []  # distinct input files/datasets, in role order
    for s in sources:
        if s is not None and s.path not in keys:
            keys.append(s.path)
    units, ends, file_ends, totals = _units(keys, readers, footers)
    shown = {s.path: s.display for s in sources if s is not None}
    if len(set(totals.values())) > 1:
        listing = ", ".join(f"{shown[k]} has {n} rows" for k, n in totals.items())
        raise DataError(
            f"Row counts differ: {listing}. Rows are paired by position, so every input needs the same number of rows."
        )
    total = totals[keys[0]]
    if total == 0:
        raise DataError(f"{shown[keys[0]]} has no data rows. Expected one row per sample.")
    common = set.intersection(*(ends[k] for k in keys))
    if spec.batched:
        if batch_size is None:
            common = {total}  # one batch: the whole input (the engine checks its size)
        else:
            common = {b for b in common if b % int(batch_size) == 0 or b == total}
    cuts, start = [], 0
    for b in sorted(common):
        if b == total or b - start >= TASK_ROWS or b in file_ends[keys[0]]:
            cuts.append((start, b))
            start = b
    tasks = []
    cursor = {key: [0, 0] for key in keys}  # per input: next unit, its first row (one pass over the units)
    for index, (a, b) in enumerate(cuts):
        part: dict[str, Source] = {}
        for key in keys:
            files, base, schema, src = readers[key]
            chosen: dict[int, list[int]] = {}
            i, row = cursor[key]
            us = units[key]
            while i < len(us) and row + us[i][2] <= b:  # cuts are unit ends, so [a, b) is whole units
                fi, gi, n = us[i]
                chosen.setdefault(fi, []).append(gi)
                row += n
                i += 1
            cursor[key] = [i, row]
            pick = sorted(chosen)
            part[key] = replace(
                src,
                fmt="dataset",
                files=tuple(files[fi] for fi in pick),
                row_groups=tuple(
                    None if len(chosen[fi]) == sum(1 for n in footers[files[fi]] if n) else tuple(chosen[fi])
                    for fi in pick
                ),
                base=base if base is not None else _parent(files[0]),
                schema=schema,
                rows=b - a,
                row_start=a,
            )
        tasks.append(
            Task(
                index,
                a,
                b,
                [None if s is None else replace(part[s.path], column=s.column, text=s.text) for s in sources],
            )
        )
    return tasks, total


def _units(keys: list[str], readers: dict[str, Any], footers: dict[str, list[int]]):
    """Per input: its row groups as (file index, row group, rows), the global rows where a row
    group ends, where a file ends, and its total rows."""
    units: dict[str, list[tuple[int, int, int]]] = {}  # key -> [(file index, row group, rows)]
    ends: dict[str, set[int]] = {}
    file_ends: dict[str, set[int]] = {}
    totals: dict[str, int] = {}
    for key in keys:
        files = readers[key][0]
        us, e, fe, row = [], set(), set(), 0
        for fi, f in enumerate(files):
            for gi, n in enumerate(footers[f]):
                if n:
                    us.append((fi, gi, n))
                    row += n
                    e.add(row)
            fe.add(row)
        units[key], ends[key], file_ends[key], totals[key] = us, e, fe, row
    return units, ends, file_ends, totals


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if is_uri(path) else os.path.dirname(os.path.abspath(path))


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def _refuse(opts) -> None:
    if opts.id_col:
        raise UsageError(
            f"{opt('id_col')} joins inputs by key, which needs every row of the other inputs at once; "
            f"{opt('engine')} dask pairs inputs by position. Use {opt('engine')} local, or write predictions and "
            "targets into the same shards."
        )
    if opts.grad is not None:
        raise UsageError(f"{opt('grad')} is written by the local engine only; use {opt('engine')} local for gradients.")
    if opts.strict:
        raise UsageError(
            f"{opt('strict')} acts on the warnings of the local engine, which looks at every row (a part of the "
            f"rows cannot tell); use {opt('engine')} local with {opt('strict')}."
        )
    if opts.per_sample == "-":
        raise UsageError(
            f"With {opt('engine')} dask nothing per-sample passes through the client, so per-sample rows cannot go "
            f"to stdout ({opt('reduction')} none or {opt('per_sample')} -): give {opt('per_sample')} DIR, a directory "
            "the workers can write to (one Parquet file per task)."
        )
    if opts.per_sample is not None:
        ext = os.path.splitext(opts.per_sample.rstrip("/").lower())[1]
        if ext in SINK_FORMATS:
            raise UsageError(
                f"{opt('per_sample')} {opts.per_sample}: with {opt('engine')} dask this names a directory, into "
                "which every task writes one Parquet file (part-00000.parquet, ...); the directory reads back as one "
                "dataset. Give a directory path without a file extension."
            )


def _prepare_dir(path: str) -> None:
    """Create the per-sample directory; remove the parts of an earlier run; refuse other files."""
    if is_uri(path):
        import pyarrow.fs as pafs

        from lossctl.io.remote import resolve

        fs, p = resolve(path)
        infos = fs.get_file_info(pafs.FileSelector(p, allow_not_found=True))
        names = [(i.base_name, i.path) for i in infos]
        remove = fs.delete_file
        fs.create_dir(p, recursive=True)
    else:
        if os.path.exists(path) and not os.path.isdir(path):
            raise DataError(f"{opt('per_sample')} {path}: is a file; with {opt('engine')} dask it names a directory.")
        os.makedirs(path, exist_ok=True)
        names = [(n, os.path.join(path, n)) for n in os.listdir(path)]
        remove = os.unlink
    import re

    ours = re.compile(r"part-\d{5}\.parquet$")
    others = [n for n, _ in names if not ours.match(n) and not n.startswith(".")]
    if others:
        raise DataError(
            f"{opt('per_sample')} {path}: the directory holds other files ({', '.join(sorted(others)[:5])}); "
            "expected a new or empty directory (or one holding only the parts of an earlier run, which are replaced)."
        )
    for n, full in names:
        if ours.match(n):
            remove(full)


def _clean_dir(path: str) -> None:
    try:
        _prepare_dir(path)
    except Exception:  # noqa: BLE001 - best effort after a failure; the failure is what is reported
        pass


def run(spec, texts: list, params: dict, opts, *, scheduler: str | None = None, workers: int | None = None) -> dict:
    """The report of ``engine.run`` for the same arguments, computed by Dask workers."""
    from lossctl.stages.model import report_from_state
    from lossctl.stages.runner import Run
    from lossctl.stages.state import save_state

    _refuse(opts)
    local = replace(
        opts, per_sample=None, grad=None, grad_norm=False, save_state=None, progress=None, per_sample_echo=False
    )
    # 1. Sources, columns, roles and parameters are checked here, from the schemas.
    probe = Run(spec, texts, params, local)
    sources, layout = _layout(probe, texts, opts)
    if opts.per_sample is not None:
        _prepare_dir(opts.per_sample)
        outputs = current_outputs()
        if outputs is not None:  # the run fails after the workers wrote their parts: remove them
            outputs.on_abort(functools.partial(_clean_dir, opts.per_sample))

    client, cluster = connect(scheduler, workers)
    distributed = _distributed()
    cancel = f"lossctl-cancel-{uuid.uuid4().hex}"
    interrupted = _Interrupts()
    futures: dict = {}
    failed = True
    try:
        _check_workers(client, scheduler)
        # 2. Footers, read by the workers.
        files = sorted({f for files, *_ in layout.values() for f in files})
        counts = client.gather(client.map(row_group_rows, files, pure=False))
        footers = dict(zip(files, counts))
        tasks, total = plan(spec, texts, sources, layout, footers, params.get("batch_size"))
        # 3. One task per part; states merged in task order as they arrive.
        task_opts = replace(local, per_sample_format="parquet")
        # On a shared cluster, tasks still running when the run is stopped check a Dask Event and
        # remove their part; a cluster of our own is shut down instead (no worker clients needed).
        watch = cancel if cluster is None and opts.per_sample is not None else None
        futures = {
            t.index: client.submit(
                run_task, spec.name, texts, params, task_opts, t, opts.per_sample, watch, total, pure=False
            )
            for t in tasks
        }
        merge = _Merger(opts, tasks, probe)
        merge.gather(distributed, futures, interrupted, total)
        workers_seen = len(client.scheduler_info().get("workers", {}))
        failed = False
    except BaseException:
        for f in futures.values():
            f.cancel()
        if opts.per_sample is not None and cluster is None:
            # Tasks already running on a shared cluster cannot be stopped: they see this and
            # remove the part they write.
            try:
                distributed.Event(cancel, client=client).set()
            except Exception:  # noqa: BLE001 - best effort; the failure is what is reported
                pass
        raise
    finally:
        interrupted.restore()
        client.close()
        if cluster is not None:
            cluster.close()  # stops its worker processes: nothing is written after this
        if failed and opts.per_sample is not None:
            _clean_dir(opts.per_sample)

    meta = _merged_meta(merge.first, merge.rows_read, probe, opts)
    state = merge.state
    report = report_from_state(spec, meta, state, ci_level=opts.ci, hist=opts.hist)
    report["engine"] = {"name": "dask", "tasks": len(tasks), "workers": workers_seen, "scheduler": scheduler}
    if opts.per_sample is not None:
        report["per_sample"] = {"path": opts.per_sample, "rows": merge.per_sample_rows, "files": len(tasks)}
    if opts.save_state:
        save_state(opts.save_state, spec, meta, state, opts.ci)
        report["state"] = {"path": opts.save_state}
    return report


def _layout(probe, texts: list, opts) -> tuple[list[Source | None], dict]:
    """Step 1: each role's source, and each file's Parquet files, base and schema (the probe's
    readers check sources, columns, roles and parameters from the schemas)."""
    readers = probe.open()
    try:
        if opts.group_by and len(readers) > len({i.source.path for i in probe.inputs}):
            raise UsageError(
                f"{opt('group_by')} PATH:COL reads a side file, which {opt('engine')} dask does not split among "
                "workers: group by a column of an input (or a hive partition key of a directory of shards)."
            )
        layout = {}
        sources: list[Source | None] = []
        it = iter(probe.inputs)
        for text in texts:
            if text is None:
                sources.append(None)
                continue
            inp = next(it)
            sources.append(inp.source)
            if inp.source.path not in layout:
                layout[inp.source.path] = (*_parquet_files(inp.reader, inp.source), inp.source)
    finally:
        for r in readers:
            r.close()
    return sources, layout


class _Merger:
    """Step 3 on the client: the tasks' states merged in task order as they arrive."""

    def __init__(self, opts, tasks: list[Task], probe):
        from lossctl.aggregate import RunState

        self.opts, self.tasks, self.probe = opts, tasks, probe
        self.state = RunState(top=opts.top, bootstrap=(opts.ci_n, opts.seed) if opts.ci else None)
        self.results: dict[int, dict] = {}  # arrived ahead of their turn to be merged
        self.merged = 0
        self.first: dict | None = None  # the first task's metadata and input shapes
        self.per_sample_rows = 0
        self.rows_read: dict[str, int] = {}

    def gather(self, distributed, futures: dict, interrupted, total: int) -> None:
        index = {f.key: i for i, f in futures.items()}
        done_rows = 0
        arrived = distributed.as_completed(list(futures.values()))
        while not arrived.is_empty():
            interrupted.check()
            batch = arrived.next_batch(block=False)
            if not batch:
                time.sleep(0.02)
                continue
            for fut in batch:
                i = index[fut.key]
                self.results[i] = _result(fut, self.tasks[i])
                futures.pop(i).release()  # the worker may drop the result now
                for role, n in self.results[i]["meta"]["rows_read"].items():
                    self.rows_read[role] = self.rows_read.get(role, 0) + int(n)
                done_rows += self.tasks[i].stop - self.tasks[i].start
            while self.merged in self.results:
                self._merge(self.results.pop(self.merged))
            if self.opts.progress:
                self.opts.progress(done_rows, total)

    def _merge(self, res: dict) -> None:
        opts = self.opts
        if self.first is None:
            self.first = {"meta": res["meta"], "shapes": res["shapes"]}
        else:
            _same_shapes(self.first, res, self.tasks[self.merged], self.probe)
        self.state.merge(res["state"])
        if opts.max_groups is not None and len(self.state.groups) > opts.max_groups:
            raise DataError(
                f"{opt('group_by')} {opts.group_by}: more than {opts.max_groups} distinct values "
                f"({len(self.state.groups)} in the first {self.merged + 1} parts); per-group results are kept "
                f"for at most {opt('max_groups')} {opts.max_groups} groups. Group by a column with fewer "
                f"values, or raise {opt('max_groups')} N (memory and the report grow with it)."
            )
        self.per_sample_rows += res["per_sample_rows"]
        self.merged += 1


WORKER_WAIT_S = 30  # how long a scheduler without workers is given for one to join


def _check_workers(client, scheduler: str | None) -> None:
    """At least one worker, and every worker runs this lossctl (another version could give other numbers)."""
    from importlib.metadata import version

    from lossctl import __version__

    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT_S)
    except TimeoutError:
        raise DataError(
            f"{opt('scheduler')} {scheduler}: no worker joined within {WORKER_WAIT_S} s. "
            f"Start workers with `dask worker {scheduler}` on machines that have lossctl installed."
        ) from None
    found = client.run(version, "lossctl", on_error="return")
    bad = {w: v for w, v in found.items() if v != __version__}
    if bad:
        listing = ", ".join(
            f"{w} has {'no lossctl' if isinstance(v, Exception) else 'lossctl ' + str(v)}"
            for w, v in sorted(bad.items())
        )
        raise DataError(
            f"The Dask workers must run the lossctl version of this client ({__version__}): {listing}. "
            "Install the same lossctl (and the dask extra) on every worker."
        )


def _result(fut, task: Task) -> dict:
    """A task's result; its lossctl error as it is, any other failure as a DataError naming its rows."""
    try:
        return fut.result()
    except (DataError, UsageError):
        raise
    except Exception as exc:  # noqa: BLE001 - a worker died (KilledWorker), ran out of memory, ...
        why = short_reason(exc)
        raise DataError(
            f"a Dask worker failed on rows {task.start}..{task.stop - 1} ({type(exc).__name__}: {why}). "
            f"If a worker ran out of memory, give it more, or use {opt('chunk_size')} to read smaller chunks."
        ) from None


def _same_shapes(first: dict, res: dict, task: Task, probe) -> None:
    """Every task's inputs have the row shape of the first task's (as one local run checks)."""
    for inp, a, b in zip(probe.inputs, first["shapes"], res["shapes"]):
        if a and b and a[1:] != b[1:] and a[1:] != ["ragged"]:
            from lossctl.stages.compute import shape_text

            raise DataError(
                f"{inp.where()}, row {task.start}: shape changes from {shape_text(a)} to {shape_text(b)}."
            )


def _merged_meta(first: dict, rows_read: dict[str, int], probe, opts) -> dict:
    """The first task's metadata, with the rows of all tasks and the inputs as the user named them."""
    meta = dict(first["meta"])
    meta["rows_read"] = rows_read
    meta["inputs"] = [
        dict(i, rows=rows_read[i["role"]], format=inp.source.fmt) for i, inp in zip(meta["inputs"], probe.inputs)
    ]
    meta["row_offset"] = opts.row_offset
    return meta
