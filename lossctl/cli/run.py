"""The bodies of the commands: from validated arguments to a report, its files and the exit code.

The command line's values are checked here once against the option schema (lossctl.options);
below this layer only an :class:`~lossctl.options.Options` and the loss parameters travel.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from lossctl import options as run_options
from lossctl import registry
from lossctl.cli.console import _say, _silence_stdout, _stderr_console, _stdout_console, _step_summary, _write_text
from lossctl.errors import EXIT_CHECK, EXIT_DATA, CheckFailed, UsageError
from lossctl.options import Options


def _completion(shell: str) -> None:
    from lossctl import completion

    if shell not in completion.SHELLS:
        raise UsageError(f"the shell must be one of {', '.join(completion.SHELLS)}; got {shell!r}.")
    sys.stdout.write(completion.script(shell))


def _diff(docs, fmt, precision, max_delta, max_rel_delta, ci, quiet, no_color) -> None:
    from lossctl import diff, report as rep

    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    if len(docs) < 2:
        raise UsageError("diff needs a baseline and at least one candidate: lossctl diff BASE.json CAND.json.")
    if ci is not None and not 0 < ci < 1:
        raise UsageError(f"--ci must lie in (0, 1); got {ci!r}.")
    try:
        doc = diff.diff(docs, max_delta=max_delta, max_rel_delta=max_rel_delta, ci=ci)
    except UsageError as exc:
        if ci is not None and "paired interval" in exc.message:
            raise UsageError("--ci needs state files on both sides (compute --ci ... --save-state).") from None
        raise
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(diff.to_markdown(doc, precision))
    else:
        diff.render_table(doc, _stdout_console(no_color), precision)
    sys.stdout.flush()
    if not doc["passed"]:
        if not quiet:
            for c in doc["candidates"]:
                for r in c["rows"]:
                    if r["status"] == "fail":
                        where = r["name"] + ("" if r["group"] is None else f" group {r['group']}")
                        print(f"lossctl: check failed: {c['label']}: {where}: {'; '.join(r['failures'])}.", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK)


def _validated(kw: dict[str, Any], schema) -> None:
    """Every option of ``schema`` given on the command line, checked against its one contract
    (converted in place); before any file is opened."""
    for o in schema:
        if kw.get(o.name) is not None:
            kw[o.name] = o.check(kw[o.name])


def _options(kw: dict[str, Any], **face: Any) -> Options:
    """The run's :class:`Options` from the command line's values (``face``: what the command decides)."""
    given = {o.name: kw[o.name] for o in run_options.RUN_OPTIONS if o.name in kw}
    return run_options.build_options(given, **face)


def _loss_params(spec: registry.LossSpec, kw: dict[str, Any]) -> dict[str, Any]:
    """The loss's parameters (taken out of ``kw``), parsed and checked by their declarations."""
    params: dict[str, Any] = {}
    for p in spec.params:
        raw = kw.pop(p.dest)
        params[p.dest] = raw if p.type == "bool" else (p.default if raw is None else p.parse(raw, spec.name))
    return params


def _compute(spec: registry.LossSpec, kw: dict[str, Any]) -> None:
    from lossctl import engine
    from lossctl.io import remote

    remote.set_timeout(kw["remote_timeout"])
    texts = [kw.pop(role.name.replace("-", "_")) for role in spec.inputs]
    inputs = [(role.metavar, t) for role, t in zip(spec.inputs, texts)]
    inputs += [("--" + p.name, kw[p.dest]) for p in spec.params if isinstance(kw[p.dest], str)]
    _preflight(kw, inputs, dirs=("--per-sample",) if kw["engine"] == "dask" else ())
    params = _loss_params(spec, kw)
    _validated(kw, run_options.SCHEMA)
    fmt, reduction = kw["format"], kw["reduction"]
    bounds = _bounds_from(kw, spec.name)
    per_sample = _compute_outputs(kw, bounds)
    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    progress = _Progress(stderr_tty, kw["no_color"])
    opts = _options(
        kw,
        per_sample=per_sample,
        per_sample_format=fmt if fmt in ("csv", "tsv", "jsonl") else ("jsonl" if fmt == "json" else "csv"),
        hist=kw["hist"] or bool(kw["html"]),
        progress=progress.update if stderr_tty else None,
        per_sample_echo=reduction == "none",
    )
    try:
        result = engine.run_on(opts.engine, spec, texts, params, opts, opts.scheduler, opts.workers)
    finally:
        progress.stop()
    _finish(result, bounds, kw, per_sample, stderr_tty, fmt, "lossctl compute")


def _compute_outputs(kw: dict[str, Any], bounds) -> str | None:
    """Options that only make sense together; where the per-sample rows go (- is stdout)."""
    reduction = kw["reduction"]
    if kw["per_group"] and not kw["group_by"]:
        raise UsageError("--per-group applies the bounds to each group of --group-by COL; give --group-by too.")
    if reduction == "none" and (bounds.any or kw["score_only"] or kw["junit"]):
        raise UsageError("--reduction none has no headline value, so bounds, -b and --junit do not apply.")
    per_sample = kw["per_sample"]
    if kw["grad_norm"] and per_sample is None and reduction != "none":
        raise UsageError("--grad-norm adds a column to the per-sample output: give --per-sample PATH too.")
    if reduction == "none" and per_sample is None:
        per_sample = "-"
    if kw["per_token"] == "-":
        raise UsageError("--per-token -: stdout holds the report; write the per-token rows to a file (.csv, .parquet, ...).")
    if per_sample == "-" and kw["score_only"]:
        raise UsageError("--per-sample - and -b both write to stdout; send the per-sample rows to a file.")
    return per_sample


def _preflight(kw: dict[str, Any], inputs: list, dirs: tuple = ()) -> None:
    """Refuse outputs that would overwrite an input or each other, before anything is read."""
    from lossctl.io.outputs import preflight

    outputs = [
        (f"--{k.replace('_', '-')}", kw.get(k)) for k in ("per_sample", "grad", "save_state", "junit", "per_token")
    ]
    inputs = inputs + [("--group-by", kw.get("group_by")), ("--baseline", kw.get("baseline"))]
    inputs += [("--counts", kw.get("counts"))]
    preflight(outputs, inputs, dirs)


def _bounds_from(kw: dict[str, Any], loss: str):
    from lossctl import checks

    bounds = checks.Bounds(
        max=kw["max_value"],
        min=kw["min_value"],
        max_abs_increase=kw["max_abs_increase"],
        max_rel_increase=kw["max_rel_increase"],
        per_group=kw["per_group"],
    )
    if kw["baseline"] is not None:
        bounds.baseline = checks.load_baseline(kw["baseline"], loss)
    if (bounds.max_abs_increase is not None or bounds.max_rel_increase is not None) and bounds.baseline is None:
        raise UsageError(
            "--max-abs-increase and --max-rel-increase compare with a --baseline (a number or a JSON result)."
        )
    return bounds


def _finish(result: dict, bounds, kw: dict[str, Any], per_sample, stderr_tty: bool, fmt: str, suite: str) -> None:
    """Bounds, JUnit, rendering and the exit code of a compute-like report."""
    from lossctl import checks, report as rep

    reduction = result["reduction"]
    outcomes = checks.check_report(result, bounds) if bounds.any else []
    if outcomes:
        result["checks"] = outcomes
        if bounds.baseline is not None:
            result["baseline"] = {"source": bounds.baseline.source, "value": bounds.baseline.value}
    if kw["junit"]:
        _write_text(kw["junit"], checks.junit_xml([_as_check(result, outcomes)], suite=suite), "--junit")
    if kw.get("html"):
        from lossctl import html

        _write_text(kw["html"], html.render(result), "--html")
    if not kw["hist"]:
        result.pop("hist", None)  # computed for the HTML page only

    if reduction != "none":
        try:
            if kw["score_only"]:
                sys.stdout.write(rep.score_only(result, kw["precision"]) + "\n")
                sys.stdout.flush()
            elif per_sample == "-":
                if stderr_tty:
                    rep.render_table(result, _stderr_console(kw["no_color"]), kw["precision"])
            elif fmt == "table":
                rep.render_table(result, _stdout_console(kw["no_color"]), kw["precision"])
            else:  # plain text: Rich (~14 ms to import) is not needed
                sys.stdout.write(rep.machine_text(result, fmt, kw["precision"], kw.get("csv_safe", False)))
                sys.stdout.flush()
        except BrokenPipeError:  # the reader went away (`| head -1`): the bounds still set the exit code
            _silence_stdout()
    if not kw["quiet"]:
        for w in result.get("warnings") or []:
            _say(f"lossctl: warning: {w}")
    dropped = result["rows"]["dropped"]
    if dropped and stderr_tty and fmt != "table":
        _say(f"lossctl: note: {dropped} row(s) dropped by --on-missing drop.")
    failed = [o["message"] for o in outcomes if not o["passed"]]
    if failed:
        raise CheckFailed("check failed: " + "; ".join(failed) + ".")


def _as_check(result: dict, outcomes: list[dict]) -> dict:
    from lossctl import checks

    return {
        "name": result["loss"],
        "loss": result["loss"],
        "value": result["value"],
        "outcomes": outcomes,
        "status": checks.status_of(outcomes),
        "signature": result["signature"],
    }


class _Progress:
    """A Rich progress bar on stderr that appears only once a run has taken a second."""

    def __init__(self, enabled: bool, no_color: bool):
        import time

        self.enabled = enabled
        self.no_color = no_color
        self.started = time.monotonic()
        self.bar = None
        self.task = None

    def update(self, done: int, total: int | None) -> None:
        import time

        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.started < 1.0:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("rows"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=_stderr_console(self.no_color),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("rows", total=total)
        self.bar.update(self.task, completed=done, total=total)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _compare(spec: registry.LossSpec, kw: dict[str, Any]) -> None:
    from lossctl import compare
    from lossctl.io import remote

    remote.set_timeout(kw["remote_timeout"])
    predictions = kw.pop("predictions")
    others = {
        role.name: kw.pop("role_" + role.name.replace("-", "_"))
        for role in spec.inputs
        if ("role_" + role.name.replace("-", "_")) in kw
    }
    params = _loss_params(spec, kw)
    _validated(kw, run_options.compare_options())
    if kw["per_group"] and not kw["group_by"]:
        raise UsageError("--per-group applies the gates to each group of --group-by COL; give --group-by too.")
    gates = {"max_delta": kw["max_delta"], "max_rel_delta": kw["max_rel_delta"], "alpha": kw["gate_alpha"]}
    gated = any(v is not None for v in gates.values()) or kw["fail_if_worse"]
    opts = _options({k: v for k, v in kw.items() if k != "top"})  # compare's --top is its own
    doc = compare.compare(
        spec,
        predictions,
        others,
        params,
        opts,
        level=opts.ci if opts.ci is not None else 0.95,
        resamples=opts.ci_n,
        seed=opts.seed,
        permutations=kw["permutations"],
        top=kw["top"],
        delta_hist=bool(kw["html"]),
        labels=kw["labels"] or None,
        correction=kw["correction"],
    )
    if gated:
        compare.gate(doc, **gates, fail_if_worse=kw["fail_if_worse"], per_group=kw["per_group"])
    _compare_files(doc, kw)
    _compare_report(doc, kw)
    if gated and not doc["passed"]:
        if not kw["quiet"]:
            for c in doc["candidates"]:
                msgs = "; ".join(o["message"] for o in c["outcomes"] if not o["passed"])
                if msgs:
                    print(f"lossctl: check failed: {msgs}.", file=sys.stderr)
        raise typer.Exit(EXIT_CHECK)


def _compare_files(doc: dict, kw: dict[str, Any]) -> None:
    """--junit (one test case per candidate) and --html of a comparison."""
    if kw["junit"]:
        from lossctl import checks

        cases = [
            {
                "name": c["label"],
                "loss": doc["loss"],
                "value": c["value"],
                "outcomes": c.get("outcomes", []),
                "status": c.get("status", "pass"),
                "signature": c["signature"],
            }
            for c in doc["candidates"]
        ]
        _write_text(kw["junit"], checks.junit_xml(cases, suite=f"lossctl compare {doc['loss']}"), "--junit")
    if kw["html"]:
        from lossctl import html

        _write_text(kw["html"], html.render(doc), "--html")
        for c in doc["candidates"]:
            c.pop("delta_hist", None)  # for the HTML page only


def _compare_report(doc: dict, kw: dict[str, Any]) -> None:
    from lossctl import report as rep

    fmt = kw["format"]
    if fmt == "json":
        sys.stdout.write(rep.to_json(doc) + "\n")
    elif fmt == "markdown":
        sys.stdout.write(rep.compare_markdown(doc, kw["precision"]))
    else:
        rep.render_compare(doc, _stdout_console(kw["no_color"]), kw["precision"])
    sys.stdout.flush()
    if not kw["no_step_summary"]:
        _step_summary(lambda: rep.compare_markdown(doc, kw["precision"]))


def _merge(kw: dict[str, Any]) -> None:
    from lossctl import engine

    _preflight(kw, [("STATE", path) for path in kw["states"]])
    fmt = run_options.BY_NAME["format"].check(kw["format"])
    spec, meta, state, level = engine.merge_states(kw["states"])
    if kw["ci"] is not None and state.bootstrap is None:
        raise UsageError("--ci needs bootstrap resamples in the states: run compute with --ci (and --save-state).")
    if kw["per_group"] and not meta.get("group_by"):
        raise UsageError("--per-group needs states computed with --group-by.")
    ci = kw["ci"] if kw["ci"] is not None else level
    result = engine.report_from_state(spec, meta, state, ci_level=ci, hist=kw["hist"] or bool(kw["html"]))
    stderr_tty = sys.stderr.isatty() and not kw["quiet"]
    _finish(result, _bounds_from(kw, spec.name), kw, None, stderr_tty, fmt, "lossctl merge")


def _check(
    config: str,
    fmt: str,
    junit: str | None,
    precision: int | None,
    quiet: bool,
    no_color: bool,
    html: str | None = None,
    no_step_summary: bool = False,
) -> None:
    from lossctl import checks, report as rep

    if fmt not in ("table", "json", "markdown"):
        raise UsageError(f"--format must be table, json or markdown; got {fmt!r}.")
    _preflight({"junit": junit}, [("CONFIG", config)])
    items = checks.load_config(config)
    _preflight({"junit": junit}, [(f"check {c.name}:", t) for c in items for t in _check_inputs(c)])
    results = checks.run_checks(items)
    if junit:
        _write_text(junit, checks.junit_xml(results, suite=f"lossctl check {os.path.basename(config)}"), "--junit")
    doc = rep.check_document(config, results)
    if html:
        from lossctl import html as html_page

        _write_text(html, html_page.render(doc), "--html")
    try:
        if fmt == "json":
            sys.stdout.write(rep.to_json(doc) + "\n")
        elif fmt == "markdown":
            sys.stdout.write(rep.checks_markdown(doc, precision))
        else:
            rep.render_checks(doc, _stdout_console(no_color), precision)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away: the checks still set the exit code
        _silence_stdout()
    if not no_step_summary:
        _step_summary(lambda: rep.checks_markdown(doc, precision))
    errors = [r for r in results if r["status"] == "error"]
    failed = [r for r in results if r["status"] == "fail"]
    if not quiet:
        for r in results:
            reps = [t["report"] for t in r.get("terms") or []] or ([r["report"]] if r.get("report") else [])
            for w in dict.fromkeys(w for rep_ in reps for w in rep_.get("warnings") or []):
                _say(f"lossctl: warning: check {r['name']}: {w}")
        for r in errors:
            _say(f"lossctl: error: check {r['name']}: {r['error']}")
        for r in failed:
            msgs = "; ".join(o["message"] for o in r["outcomes"] if not o["passed"])
            _say(f"lossctl: check failed: {r['name']}: {msgs}.")
    if errors:
        from lossctl.io.outputs import current_outputs

        staged = current_outputs()
        if staged is not None:  # every check ran: the JUnit/HTML report is complete and says why some could not
            staged.commit()
        raise typer.Exit(EXIT_DATA)
    if failed:
        raise typer.Exit(EXIT_CHECK)


def _check_inputs(check) -> list:
    """Every file a check of a config reads: its terms' inputs, side files and file parameters."""
    texts = []
    for t in check.terms:
        texts += list(t.inputs) + [t.options.group_by]
        texts += [v for v in t.params.values() if isinstance(v, str)]
    return [t for t in texts if isinstance(t, str)]
