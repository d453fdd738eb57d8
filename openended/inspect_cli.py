"""Inspection commands (top, show, lineage, diff, tree, query, export, plot, serve, compare).

Each command reads the campaign database read-only (safe while the campaign writes to it), prints
a table or text for people and, with ``--json``, the same data for programs. The data come from
:mod:`openended.inspection`; this module only parses options and prints.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from archive_db import ArchiveDBError, unreadable
from openended.cli_help import Command
from openended.serve import DEFAULT_HOST, DEFAULT_PORT

DB_ARG = typer.Argument(help="campaign database", show_default=False)
AGENT_ARG = typer.Argument(help="agent id, or 'best'", show_default=False)
JSON_OPT = typer.Option("--json", help="machine-readable output")


def _console() -> Console:
    console = Console()
    # a pipe gets wide tables instead of rich's 80-column default (no wrapped ids or numbers)
    return console if console.is_terminal else Console(width=200)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@contextlib.contextmanager
def _errors(db: Path | str | None = None) -> Iterator[None]:
    """Bad input and store errors become one ``error: ...`` line and exit status 2; an SQLite error while
    reading ``db`` (damaged pages past a sound header) too, naming the file."""
    from openended.inspection import InspectionError

    try:
        yield
    except (InspectionError, ArchiveDBError, FileNotFoundError) as exc:
        _fail(str(exc))
    except sqlite3.DatabaseError as exc:
        _fail(str(unreadable(db if db is not None else "the database", exc)))


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _emit_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=_json_default))


def _fmt(value: object, exact: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return repr(value) if exact or not math.isfinite(value) else f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_default)
    return str(value)


def _table(rows: Sequence[Mapping[str, object]], columns: list[str], title: str | None = None,
           exact: bool = False) -> Table:
    table = Table(title=title)
    for c in columns:
        table.add_column(c if exact else c.replace("_", " "), overflow="fold")
    for r in rows:
        table.add_row(*(_fmt(r.get(c), exact) for c in columns))
    return table


#: Longer results print as plain aligned text: rich lays a table out in O(rows x columns) with a
#: large constant (about 1 s per 1,000 rows), too slow for a 10,000-step lineage.
RICH_MAX_ROWS = 300


def _print_rows(rows: Sequence[Mapping[str, object]], columns: list[str], title: str | None = None,
                exact: bool = False) -> None:
    """``exact``: column names as they are and every digit of a float (``query``'s output is pasted back
    into SQL); otherwise headers with spaces and 6 significant digits."""
    if len(rows) <= RICH_MAX_ROWS:
        _console().print(_table(rows, columns, title, exact))
        return
    header = [c if exact else c.replace("_", " ") for c in columns]
    cells = [[_fmt(r.get(c), exact) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(header)]
    lines = [] if title is None else [title]
    lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)
    typer.echo("\n".join(lines))


# --------------------------------------------------------------------------------------------
# commands


def top(
    db: Annotated[Path, DB_ARG],
    k: Annotated[int, typer.Option("-k", metavar="N", help="how many agents")] = 10,
    by: Annotated[str, typer.Option(help="rank by 'fitness' or 'novelty'")] = "fitness",
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """The best agents by fitness or novelty."""
    from openended import inspection

    with _errors(db), inspection.open_db(db) as store:
        rows = inspection.top(store, k, by)
    if as_json:
        return _emit_json(rows)
    if not rows:
        typer.echo(f"no evaluated agents with a {by} yet")
        return
    columns = ["id", "parent_id", "depth", "operator", "model", "status", "fitness", "novelty", "cell", "elite"]
    _print_rows(rows, columns, title=f"top {k} by {by}")


def show(
    db: Annotated[Path, DB_ARG],
    agent: Annotated[str, AGENT_ARG],
    contents: Annotated[bool, typer.Option(help="include the files' text (and .npy values)")] = False,
    transcript: Annotated[bool, typer.Option(help="include its model calls through the gateway")] = False,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """One agent: metadata, evaluations, feedback and files."""
    from openended import inspection

    with _errors(db), inspection.open_db(db) as store:
        info = inspection.show(store, inspection.resolve_agent(store, agent), contents=contents,
                               transcript=transcript)
    if as_json:
        return _emit_json(info)
    console = _console()
    a = info["agent"]
    meta = Table(title=f"agent {a['id']}", show_header=False)
    for key in ("status", "parent_id", "parent2_id", "depth", "operator", "model", "seed", "fitness", "novelty",
                "descriptors", "cell", "archive_event", "fail_stage", "fail_reason", "metrics", "eval_seconds",
                "tokens_in", "tokens_out", "cost", "duplicate_of", "genome_hash"):
        if a.get(key) is not None:
            meta.add_row(key.replace("_", " "), _fmt(a[key]))
    meta.add_row("elite", "yes" if info["elite"] else "no")
    meta.add_row("children", str(info["children"]))
    console.print(meta)
    if info["feedback"]:
        console.print("[bold]feedback[/bold]")
        console.print(info["feedback"], markup=False, highlight=False)
    if info["evaluations"]:
        console.print(_table(info["evaluations"], ["stage", "seconds", "exit_status", "fitness", "failure_kind"],
                             title="evaluations"))
    console.print(_table(info["files"], ["path", "bytes", "kind", "sha256"], title="files"))
    for n, record in enumerate(info.get("transcripts") or [], 1):
        limit = f", limit hit: {record['limit_hit']}" if record["limit_hit"] else ""
        console.print(f"[bold]transcript {n}[/bold]: {record['calls']} calls, {record['rejected']} refused, "
                      f"{record['tokens_in']} + {record['tokens_out']} tokens, cost {record['cost']:g}{limit}")
        for entry in record["entries"]:
            console.print(f"[{entry['at']:.2f}s] {entry['endpoint']} {entry['model'] or '-'} -> {entry['status']}",
                          markup=False, highlight=False)
            console.print("  request: " + entry["request"], markup=False, highlight=False)
            console.print("  answer:  " + entry["response"], markup=False, highlight=False)
    if transcript and not info.get("transcripts"):
        console.print("no transcript: this agent made no evaluation with the model gateway")
    for f in info["files"]:
        if "text" in f:
            console.rule(f["path"])
            console.print(f["text"], markup=False, highlight=False)
        elif "values" in f:
            console.rule(f"{f['path']} {f['shape']} {f['dtype']}")
            console.print(_fmt(f["values"]), markup=False, highlight=False)


def lineage(
    db: Annotated[Path, DB_ARG],
    agent: Annotated[str, AGENT_ARG],
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """The lineage from the root to an agent: fitness, operator and cell at each step."""
    from openended import inspection

    with _errors(db), inspection.open_db(db) as store:
        aid = inspection.resolve_agent(store, agent)
        steps = inspection.lineage(store, aid)
    if as_json:
        return _emit_json(steps)
    _print_rows(steps, ["depth", "id", "parent_id", "operator", "model", "status", "fitness", "delta_fitness", "cell",
                        "archive_event"], title=f"lineage of agent {aid} ({len(steps)} steps, root first)")
    changes = [s for s in steps if s["diagnosis"] is not None]
    if changes:
        console = _console()
        console.print("\n[bold]self-modifications[/bold] (each child's diagnosis, which its parent carried out):")
        for s in changes:
            delta = "" if s["delta_fitness"] is None else f", fitness {s['delta_fitness']:+.4g}"
            console.print(f"[bold]agent {s['id']}[/bold] (from {s['parent_id']}{delta}):", markup=True)
            console.print((s["diagnosis"] or "").strip(), markup=False, highlight=False)


def diff(
    db: Annotated[Path, DB_ARG],
    a: Annotated[str, typer.Argument(help="agent id or 'best' (diffed against its parent when B is not given)")],
    b: Annotated[str | None, typer.Argument(help="second agent: diff A -> B")] = None,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """What a mutation changed: unified diff of an agent's files against its parent (or A against B)."""
    from rich.syntax import Syntax

    from openended import inspection

    with _errors(db), inspection.open_db(db) as store:
        first = inspection.resolve_agent(store, a)
        second = None if b is None else inspection.resolve_agent(store, b)
        result = inspection.diff(store, first, second)
    if as_json:
        return _emit_json(result)
    if not result["text"]:
        typer.echo(f"(no differences between agent {result['from']} and agent {result['to']})")
        return
    console = _console()
    if console.is_terminal:
        console.print(Syntax(result["text"], "diff", theme="ansi_dark", word_wrap=False))
    else:
        typer.echo(result["text"], nl=False)  # exact text in pipes: `openended diff ... | git apply` style


def tree(
    db: Annotated[Path, DB_ARG],
    max_nodes: Annotated[int, typer.Option(
        metavar="N", help="prune to this many agents, or to the best agent's whole lineage where that is longer "
        "(then elites' and archived branches while they fit)")] = 200,
    show_all: Annotated[bool, typer.Option("--all", help="every agent, no pruning")] = False,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """The lineage tree as text (pruned to the best and archived branches for big runs)."""
    from openended import inspection

    with _errors(db), inspection.open_db(db) as store:
        result = inspection.tree(store, max_nodes=max_nodes, show_all=show_all)
    if as_json:
        return _emit_json(result)
    typer.echo(inspection.format_tree(result))


def _param(text: str) -> tuple[str, int | float | str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise typer.BadParameter(f"expected NAME=VALUE, got {text!r}", param_hint="--param")
    for cast in (int, float):
        try:
            return name, cast(value)
        except ValueError:
            pass
    return name, value


def query(
    db: Annotated[Path, DB_ARG],
    sql: Annotated[str, typer.Argument(help="one SELECT (or read-only PRAGMA) statement")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", "-p", metavar="NAME=VALUE", help="NAME=VALUE for :NAME in the SQL")] = None,
    max_rows: Annotated[int | None, typer.Option(metavar="N", help="stop after this many rows")] = None,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """Run read-only SQL (anything that writes, attaches or sets a pragma is refused)."""
    from openended import inspection

    params = dict(_param(p) for p in (param or []))
    with _errors(db):
        result = inspection.read_only_query(db, sql, params, max_rows=max_rows)
    if as_json:
        return _emit_json([dict(zip(result["columns"], r, strict=True)) for r in result["rows"]])
    columns = result["columns"]
    _print_rows([dict(zip(columns, r, strict=True)) for r in result["rows"]], columns, exact=True)
    typer.echo(f"{len(result['rows'])} rows" + (" (more not shown: --max-rows)" if result["truncated"] else ""))


EXPORT_DIR_ARG = typer.Argument(metavar="DIR", help="folder to write the agent's files into", show_default=False)
GIT_OPT = typer.Option("--git", metavar="DIR",
                       help="write the lineage as a git repository into this folder: one commit per "
                            "ancestor, root first, tags agent-N, branch main at the agent")
LINEAGE_OPT = typer.Option(help="every ancestor from the root, each in DIR/agent-N/ (--git always writes the lineage)")
OVERWRITE_OPT = typer.Option(help="replace files that already exist (with --git: the whole folder)")


def export(
    db: Annotated[Path, DB_ARG],
    agent: Annotated[str, AGENT_ARG],
    out_dir: Annotated[Path | None, EXPORT_DIR_ARG] = None,
    git_dir: Annotated[Path | None, GIT_OPT] = None,
    lineage: Annotated[bool, LINEAGE_OPT] = False,
    overwrite: Annotated[bool, OVERWRITE_OPT] = False,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """Write an agent's files to a folder, or its whole lineage (--lineage), or a git repository of it (--git DIR)."""
    from openended import inspection

    if out_dir is not None and git_dir is not None:
        _fail("export: give either a folder (DIR) or --git DIR, not both")
    with _errors(db), inspection.open_db(db) as store:
        aid = inspection.resolve_agent(store, agent)
        if git_dir is not None:
            repo = inspection.export_git(store, aid, git_dir, overwrite=overwrite)
        elif out_dir is not None:
            write = inspection.export_lineage if lineage else inspection.export
            written = write(store, aid, out_dir, overwrite=overwrite)
        else:
            _fail("export: give a folder to write into (DIR) or --git DIR")
    if git_dir is not None:
        if as_json:
            return _emit_json({"agent": aid, "git": str(repo.path), "branch": repo.branch,
                               "commits": [{"agent": c.agent, "commit": c.sha, "tag": c.tag} for c in repo.commits]})
        first, last = repo.commits[0], repo.commits[-1]
        typer.echo(f"{repo.path}: {len(repo.commits)} commits, agent {first.agent} (root) to agent {last.agent}; "
                   f"branch {repo.branch} at {last.sha[:12]}, tags {first.tag} .. {last.tag}")
        return
    if as_json:
        return _emit_json({"agent": aid, "files": [str(p) for p in written]})
    for p in written:
        typer.echo(str(p))


def _dims(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected descriptor indices like 0,1, got {text!r}", param_hint="--dims") from None
    return dims


def plot(
    db: Annotated[Path, DB_ARG],
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="folder for the figures")],
    fmt: Annotated[list[str] | None, typer.Option("--format", help="png and/or svg (default both)")] = None,
    dims: Annotated[str, typer.Option(
        metavar="I,J", help="descriptor indices on the heatmap axes (others are projected)")] = "0,1",
    max_nodes: Annotated[int, typer.Option(metavar="N", help="agents shown in the lineage tree figure")] = 500,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """Figures: archive heatmap, progress curves, lineage tree, operator/model success rates."""
    from openended import plots

    with _errors(db):
        written = plots.plot_all(db, out, formats=fmt or ("png", "svg"), dims=_dims(dims), max_nodes=max_nodes)
    if as_json:
        return _emit_json({"files": [str(p) for p in written]})
    for p in written:
        typer.echo(str(p))


def serve(
    db: Annotated[Path, DB_ARG],
    host: Annotated[str, typer.Option(help="address to listen on (loopback by default)")] = DEFAULT_HOST,
    port: Annotated[int, typer.Option(help="port to listen on")] = DEFAULT_PORT,
):
    """Browse the database in datasette, read-only, with the named queries as canned queries."""
    from openended import serve as serving

    with _errors(db):
        serving.serve(db, host=host, port=port)


def compare(
    dbs: Annotated[list[Path], typer.Argument(metavar="DB", help="campaign databases", show_default=False)],
    threshold: Annotated[float | None, typer.Option(metavar="FITNESS", help="fitness for 'evaluations to threshold' "
                                                             "(default: each campaign's target)")] = None,
    as_json: Annotated[bool, JSON_OPT] = False,
):
    """Campaigns side by side: QD score, coverage, best fitness, evaluations to a threshold."""
    from openended import inspection

    with _errors(" or ".join(map(str, dbs))):
        rows = inspection.compare(dbs, threshold)
    if as_json:
        return _emit_json(rows)
    tasks = sorted({str(r["task"]) for r in rows})
    if len(tasks) > 1:  # their fitness, coverage and QD score are on different scales
        typer.echo(f"warning: these campaigns ran different tasks ({', '.join(tasks)}); their figures do not "
                   "compare", err=True)
    for r in rows:
        r["coverage_pct"] = None if r["coverage"] is None else f"{100 * r['coverage']:.1f}%"
    _print_rows(rows, ["db", "task", "archive", "evaluations", "qd_score", "coverage_pct", "best_fitness", "threshold",
                       "evaluations_to_threshold"], title="campaigns")


_COMMANDS = (top, show, lineage, diff, tree, query, export, plot, serve, compare)


def register(app: typer.Typer) -> None:
    """Add the inspection commands to the ``openended`` app."""
    for fn in _COMMANDS:
        app.command(name=fn.__name__, cls=Command)(fn)
