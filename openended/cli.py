"""The ``openended`` command line: run, resume and inspect campaigns."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from archive_db import ArchiveDBError, unreadable
from openended import inspect_cli
from openended.cli_help import Command, Group
from openended.config import FLAG_KEYS, ConfigError, load_config
from openended.dgm import DGM_CONFIGURATIONS, dgm_overrides
from openended.names import ARCHIVE_KINDS, MODEL_SERVER_ENDED, OPERATORS, SANDBOX_KINDS, SELECTION_STRATEGIES
from openended.standing import show_number
from openended.tasks import TaskError, builtin_task_names

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, cls=Group,
                  help="Open-ended evolutionary search over agents.")
console = Console()


# What lets a campaign that stopped for each reason go on.
IDLE_HINTS = {"children budget": "--budget N above the children it has finished",
              "wall-time budget": "--max-seconds S above the seconds it has run",
              "token budget": "--max-tokens N above the tokens it has spent",
              "cost budget": "a larger budget.max_cost in a campaign file (openended run FILE --db DB)"}


def _idle_hint(campaign, idle: str) -> str:
    """How a campaign that stopped for ``idle`` and has nothing left to do goes on."""
    if idle == "target fitness reached":
        spent = campaign.all_proposed()
        return "--no-stop-at-target" + (" and a --budget N above the children it has finished" if spent else "")
    return IDLE_HINTS.get(idle, "a larger budget")


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _start(config, *, quiet: bool = False, resume_only: bool = False):
    from openended.engine import Campaign
    from openended.progress import Progress

    try:
        campaign = Campaign(config, resume_only=resume_only)
    except (ConfigError, TaskError, ArchiveDBError, ValueError) as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:  # damaged pages past a sound header, found while restoring
        _fail(str(unreadable(config.db_path(), exc)))
    idle = campaign.nothing_to_do()
    if idle is not None:  # run() ends at once, without Ray: say how to go on instead of a summary of nothing
        more = _idle_hint(campaign, idle)
        summary = campaign.run()
        finished = campaign.counters.done + campaign.counters.failed
        typer.echo(f"nothing to do: the campaign in {config.db_path()} has stopped ({idle}; {finished} children "
                   f"finished); to go on, resume it with {more}: openended resume {config.db_path()} ...")
        return summary
    progress = Progress(title=f"{campaign.task.name} -> {campaign.db.path}", live=False if quiet else None)
    campaign.progress = progress
    progress.note(f"sandbox: {campaign.sandbox_in_use}")
    if campaign.config.deterministic:
        progress.note(f"reproducible: same seed, same campaign (staleness {campaign.staleness})")
    else:
        progress.note("free mode: outcomes applied as they arrive (not reproducible)")
    if campaign.sandbox_note and campaign.sandbox_note not in campaign.sandbox_in_use:
        progress.note(f"sandbox: {campaign.sandbox_note}")
    if campaign.next_id > 0 and not resume_only:  # `run` on an existing database continues its campaign
        progress.note(f"continuing the campaign in {campaign.db.path}: {campaign.counters.done} children done "
                      "(another --db starts a new one)")
    progress.note(f"operators: {', '.join(arm.label for arm in campaign.portfolio.arms)}"
                  + (" (no model configured: --llm local or [[llm.models]] adds the model's operators)"
                     if campaign.task.genome_kind == "code" and not campaign.model_names else ""))
    if campaign.resumed_pending:
        progress.note(f"resuming: {campaign.resumed_pending} children left in flight will be re-dispatched")
    with progress:
        try:
            summary = campaign.run()
        except ConfigError as exc:  # found once it joined Ray: e.g. no node of the cluster can run the sandbox
            _fail(str(exc))
    typer.echo(summary.line())
    if summary.status == "failed" or summary.stop_reason.startswith(MODEL_SERVER_ENDED):
        raise typer.Exit(1)
    return summary


@app.command(cls=Command)
def run(
    config: Annotated[Path | None, typer.Argument(help="campaign TOML file (optional)")] = None,
    task: Annotated[str | None, typer.Option(help="built-in task name or path to a task folder")] = None,
    db: Annotated[str | None, typer.Option(help="campaign database (resumed if it exists)")] = None,
    budget: Annotated[int | None, typer.Option(metavar="N", help="maximum children, roots included")] = None,
    seed: Annotated[int | None, typer.Option(help="campaign seed (parents, operators, child seeds)")] = None,
    selection: Annotated[str | None, typer.Option(help=f"parent selection: {', '.join(SELECTION_STRATEGIES)}")] = None,
    archive: Annotated[str | None, typer.Option(help=f"archive kind: {', '.join(ARCHIVE_KINDS)}")] = None,
    max_in_flight: Annotated[int | None, typer.Option(metavar="N", help="Ray tasks out at once")] = None,
    batch_size: Annotated[int | None, typer.Option(metavar="N", help="children per Ray task (batchable tasks)")] = None,
    max_seconds: Annotated[float | None, typer.Option(metavar="S", help="wall-time budget in seconds")] = None,
    ray_address: Annotated[str | None, typer.Option(metavar="ADDRESS",
                                                      help="join a running Ray cluster (ray start --head); default: "
                                                           "$RAY_ADDRESS, else a local Ray")] = None,
    sandbox: Annotated[str | None, typer.Option(metavar="KIND",
                                                help=f"where children are evaluated: {', '.join(SANDBOX_KINDS)} "
                                                     "(auto: docker if an engine answers; process does not "
                                                     "isolate)")] = None,
    llm: Annotated[str | None, typer.Option(
        help="'local': serve the embedded Gemma 3 270M for the LLM operators")] = None,
    operator: Annotated[str | None, typer.Option(help=f"mutation operator: {', '.join(OPERATORS)} "
                                                         "(default: by the task's genome)")] = None,
    max_tokens: Annotated[int | None, typer.Option(metavar="N", help="token budget (model input + output)")] = None,
    staleness: Annotated[int | None, typer.Option(
        metavar="N", help="most children proposed from an archive lacking their predecessors' outcomes")] = None,
    dgm: Annotated[str | None, typer.Option(
        metavar="NAME", help=f"a Darwin Gödel Machine configuration: {', '.join(DGM_CONFIGURATIONS)} "
                             "(other flags win)")] = None,
    free: Annotated[bool, typer.Option(
        help="apply each outcome as it arrives: faster when evaluation times vary, but the same seed no "
             "longer gives the same campaign")] = False,
    stop_at_target: Annotated[bool | None, typer.Option(
        "--stop-at-target/--no-stop-at-target",
        help="end once a child reaches the task's target (--no-stop-at-target: search on past it)")] = None,
    grace_seconds: Annotated[float | None, typer.Option(
        metavar="S", help="after SIGINT/SIGTERM, wait this long for children in flight")] = None,
    quiet: Annotated[bool, typer.Option(help="plain log lines even on a terminal")] = False,
):
    """Start a campaign, or continue the one already in --db."""
    flags = dict(task=task, db=db, budget=budget, seed=seed, selection=selection, archive=archive,
                 max_in_flight=max_in_flight, batch_size=batch_size, ray_address=ray_address, max_seconds=max_seconds,
                 sandbox=sandbox, operator=operator, max_tokens=max_tokens, staleness=staleness,
                 stop_at_target=stop_at_target, grace_seconds=grace_seconds)
    if llm not in (None, "local"):
        _fail(f"--llm takes 'local' (hosted or self-hosted models go in the config's [[llm.models]]), not {llm!r}")
    try:
        overrides = {FLAG_KEYS[k]: v for k, v in flags.items()}
        if dgm is not None:
            try:
                preset = dgm_overrides(dgm)
            except ValueError as exc:
                _fail(f"--dgm: {exc}")
            overrides = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
        if llm == "local":
            overrides["llm.local"] = True
        if free:
            overrides["deterministic"] = False
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _start(cfg, quiet=quiet)


@app.command(cls=Command)
def resume(
    db: Annotated[Path, typer.Argument(help="campaign database")],
    budget: Annotated[int | None, typer.Option(
        metavar="N", help="children budget, roots included (above the children already finished)")] = None,
    max_seconds: Annotated[float | None, typer.Option(
        metavar="S", help="wall-time budget in seconds, counted across resumes")] = None,
    max_tokens: Annotated[int | None, typer.Option(
        metavar="N", help="token budget (model input + output), counted across resumes")] = None,
    max_in_flight: Annotated[int | None, typer.Option(metavar="N", help="Ray tasks out at once")] = None,
    batch_size: Annotated[int | None, typer.Option(
        metavar="N", help="children per Ray task (batchable tasks)")] = None,
    grace_seconds: Annotated[float | None, typer.Option(
        metavar="S", help="after SIGINT/SIGTERM, wait this long for children in flight")] = None,
    ray_address: Annotated[str | None, typer.Option(
        metavar="ADDRESS",
        help="join a running Ray cluster (ray start --head); default: $RAY_ADDRESS, else a local Ray")] = None,
    sandbox: Annotated[str | None, typer.Option(
        metavar="KIND", help=f"where children are evaluated: {', '.join(SANDBOX_KINDS)}")] = None,
    stop_at_target: Annotated[bool | None, typer.Option(
        "--stop-at-target/--no-stop-at-target",
        help="end once a child reaches the task's target (--no-stop-at-target: search on past it)")] = None,
    quiet: Annotated[bool, typer.Option(help="plain log lines even on a terminal")] = False,
):
    """Continue a stopped or crashed campaign exactly where it stopped.

    Only the budgets (and whether the task's target ends it), --max-in-flight, --batch-size, --grace-seconds,
    the Ray address and the sandbox may change; the task, seed, archive and selection stay as the campaign
    started.
    """
    if not db.exists():
        _fail(f"no such database: {db}")
    try:
        cfg = load_config(None, {"db": str(db), "budget.max_children": budget, "budget.max_wall_seconds": max_seconds,
                                 "budget.max_tokens": max_tokens, "max_in_flight": max_in_flight,
                                 "batch_size": batch_size, "grace_seconds": grace_seconds, "ray_address": ray_address,
                                 "sandbox.kind": sandbox, "budget.stop_at_target": stop_at_target})
    except ConfigError as exc:
        _fail(str(exc))
    _start(cfg, quiet=quiet, resume_only=True)


@app.command(cls=Command)
def status(
    db: Annotated[Path, typer.Argument(help="campaign database")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Where a campaign stands (works while it runs)."""
    from openended.status import campaign_status

    if not db.exists():
        _fail(f"no such database: {db}")
    try:
        info = campaign_status(db).as_dict()
    except (ArchiveDBError, ValueError) as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(str(unreadable(db, exc)))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{info['task']} ({info['status']})", show_header=False)
    for key in ("db", "seed", "max_children", "children_done", "children_failed", "children_pending", "archive",
                "selection", "sandbox", "archive_size", "coverage", "qd_score", "best_fitness", "best_agent",
                "elapsed_seconds"):
        value = info[key]
        if key == "coverage":
            value = f"{value:.1%}"
        elif isinstance(value, float):
            value = show_number(value)
        finished = info["children_done"] + info["children_failed"]
        if key in ("coverage", "qd_score") and info["stats_at_children"] not in (None, finished):
            value = f"{value} (measured at {info['stats_at_children']} children)"  # e.g. after a kill -9
        table.add_row(key.replace("_", " "), str(value))
    if info["stop_reason"]:
        table.add_row("stop reason", info["stop_reason"])
    table.add_row("by status", ", ".join(f"{k} {v}" for k, v in info["by_status"].items()))
    table.add_row("duplicates", str(info["duplicates"]))
    if info["nodes_lost"]:
        table.add_row("nodes lost", f"{info['nodes_lost']} task(s) lost with their node; their children re-sent")
    if info["children_per_node"]:  # the Ray nodes that evaluated its children, most first
        table.add_row("children per node", "\n".join(f"{n} {node}" for node, n in info["children_per_node"].items()))
    if info["tokens"]:
        table.add_row("tokens / cost", f"{info['tokens']} / {info['cost']:.4g}")
    console.print(table)
    for key in ("operators", "models"):
        rates = info[key]
        if not rates or list(rates) == ["none"]:
            continue
        t = Table(title=f"success by {key[:-1]} (archived / finished)")
        for col in (key[:-1], "children", "finished", "archived", "failed", "success"):
            t.add_column(col)
        for name, r in rates.items():
            rate = "n/a" if r["success_rate"] is None else f"{r['success_rate']:.1%}"
            t.add_row(name, str(r["children"]), str(r["finished"]), str(r["archived"]), str(r["failed"]), rate)
        console.print(t)


@app.command(cls=Command)
def vacuum(
    db: Annotated[Path, typer.Argument(help="campaign database")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Give a campaign database's free space back to the disk (refused while a driver runs it; readers may stay).

    Reports the bytes of the file and its WAL before and after. Needs free space about the database's size.
    """
    from archive_db import check_file
    from archive_db import vacuum as vacuum_db
    from openended.engine import runtime

    if not db.exists():
        _fail(f"no such database: {db}")
    try:
        check_file(db)  # refused before a lock file is made beside it
    except ArchiveDBError as exc:
        _fail(str(exc))
    # the driver's own lock (`run` and `resume` take it): held here, no driver starts mid-vacuum
    made_lock = not runtime.lock_path(db).exists()
    try:
        lock = runtime.lock_campaign(db)
    except ConfigError:
        _fail(f"cannot vacuum {db}: a driver is running this campaign (it holds {runtime.lock_path(db)}); "
              "vacuum it after the run stops")
    except OSError as exc:
        _fail(f"cannot vacuum {db}: cannot take its lock {runtime.lock_path(db)} ({exc})")
    try:
        report = vacuum_db(db)
    except (ArchiveDBError, OSError) as exc:
        _fail(str(exc))
    finally:
        runtime.unlock_campaign(lock, remove=made_lock)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
        return
    typer.echo(f"{db}: {report.bytes_before:,} -> {report.bytes_after:,} bytes ({report.reclaimed:,} reclaimed, "
               f"{report.free_pages_before:,} free pages of {report.page_size:,} bytes, {report.mode})")
    if not report.checkpointed:
        typer.echo(f"a reader still holds an older snapshot: the file shrinks to {report.database_bytes:,} bytes "
                   "at the next checkpoint (when readers let go, or the next vacuum)")


@app.command(cls=Command)
def tasks():
    """List the built-in tasks."""
    from openended.tasks import load_task

    names = builtin_task_names()
    width = max(map(len, names))
    for name in names:
        typer.echo(f"{name:{width}}  {load_task(name).spec.description}")


sandbox_app = typer.Typer(no_args_is_help=True, cls=Group, help="Build and check the Docker sandbox image.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("build", cls=Command)
def sandbox_build(
    image: Annotated[str, typer.Option(help="image name")] = "openended-sandbox:latest",
    method: Annotated[str, typer.Option(help="auto (Dockerfile, then debootstrap), dockerfile, debootstrap")] = "auto",
):
    """Build the sandbox image (with no registry: debootstrap + docker import)."""
    from openended.sandbox.image import ImageBuildError, build_image

    if method not in ("auto", "dockerfile", "debootstrap"):
        _fail(f"--method must be auto, dockerfile or debootstrap, not {method!r}")
    try:
        used = build_image(image, method=method, log=typer.echo)
    except ImageBuildError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - most often: no engine
        _fail(f"cannot build {image}: {type(exc).__name__}: {str(exc)[:300]}")
    typer.echo(f"built {image} ({used})")


@sandbox_app.command("check", cls=Command)
def sandbox_check(
    image: Annotated[str, typer.Option(help="image name")] = "openended-sandbox:latest",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Engine reachable, image present and its version, limits actually enforced (runs probe containers)."""
    from openended.sandbox.image import check_sandbox

    checks = check_sandbox(image)
    if as_json:
        typer.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        table = Table(title=f"sandbox {image}", show_header=False)
        for c in checks:
            table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.detail)
        console.print(table)
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


cluster_app = typer.Typer(no_args_is_help=True, cls=Group, help="Check a Ray cluster's nodes for the sandbox.")
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("check", cls=Command)
def cluster_check(
    ray_address: Annotated[str, typer.Option(help="the Ray cluster to check (ray start --head's address)")] = "auto",
    image: Annotated[str, typer.Option(help="image name")] = "openended-sandbox:latest",
    load: Annotated[bool, typer.Option("--load/--no-load", help="load the image onto nodes that lack it, from "
                                       "this machine's copy through Ray")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Every alive node: its Docker engine, the sandbox image, its version and numpy; loads this machine's image
    where it is missing or differs."""
    from openended.cluster.check import as_dicts, check_cluster
    from openended.engine.dispatch import ensure_ray, shutdown_ray
    from openended.sandbox.engine import image_numpy

    try:
        started = ensure_ray(ray_address)
    except Exception as exc:  # noqa: BLE001 - no cluster at that address, most often
        _fail(f"cannot join the Ray cluster at {ray_address}: {type(exc).__name__}: {str(exc)[:300]}")
    try:
        reports = check_cluster(image, load=load, numpy=image_numpy(image))
    finally:
        if started:
            shutdown_ray()
    if as_json:
        typer.echo(json.dumps(as_dicts(reports), indent=2))
    else:
        table = Table(title=f"cluster {ray_address}: sandbox image {image}")
        for column in ("node", "cpus", "docker", "image", "status"):
            table.add_column(column)
        for r in reports:
            loaded = " (image loaded)" if r.loaded else ""
            status = f"[green]ok[/green]{loaded}" if r.ok else f"[red]{r.problem}[/red]"
            table.add_row(f"{r.node_id[:12]} {r.address}{' (head)' if r.head else ''}", f"{r.cpus:g}",
                          r.engine or "none", f"v{r.image_version}, numpy {r.image_numpy or 'unlabelled'}"
                          if r.image_version else "absent", status)
        console.print(table)
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


inspect_cli.register(app)


if __name__ == "__main__":
    app()
