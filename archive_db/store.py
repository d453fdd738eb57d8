"""ArchiveDB: the SQLite lineage tree of one campaign (one file = one campaign).

The store is the checkpoint. The campaign driver is its only writer; any number of readers may
open the same file read-only at the same time (see :mod:`archive_db.connection`).

Every write method is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) unless it runs inside
:meth:`ArchiveDB.transaction`, in which case it joins the outer transaction (through a savepoint,
so a refused call still writes nothing). Batch methods (:meth:`ArchiveDB.propose`,
:meth:`ArchiveDB.record`) check the whole batch (:mod:`archive_db.records`) before writing anything.

The store keeps the run's ``descriptor_schema`` as opaque JSON. The one thing it reads from it is a
top-level ``names`` list, if there is one: its length is the length of every agent's descriptors.
Without one, every agent's descriptors must have the length of the first descriptors stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .connection import StoreConnection
from .errors import ArchiveDBError, InvalidValueError, RunExistsError, UnknownAgentError
from .genomes import GenomeParts, genome_parts, store_genomes
from .integrity import IntegrityReport, check_integrity
from .lineage import Counts, lineage_counts
from .reads import Reads
from .recipes import MATERIALISE_EVERY, CompactCandidate, Genomes, RecipeRow, method_key, regenerator
from .records import (
    NEEDS_FITNESS,
    NEEDS_GENOME,
    RUN_STATUSES,
    TERMINAL_STATUSES,
    AgentState,
    CheckedOutcome,
    Evaluation,
    Outcome,
    Proposal,
    as_int,
    check_evaluation,
    check_outcome,
    check_proposal,
    evaluation_runs,
    finite,
    to_json,
)
from .sql import SCHEMA_VERSION, dict_rows, ids_json

_STATS_COLUMNS = frozenset({
    "at", "children_done", "children_failed", "children_in_flight", "archive_size", "coverage", "qd_score",
    "best_fitness", "mean_fitness",
})

_UPDATE_SQL = (
    "UPDATE agents SET status = ?, genome_hash = COALESCE(?, genome_hash), fitness = COALESCE(?, fitness), "
    "descriptors = COALESCE(?, descriptors), metrics = COALESCE(?, metrics), feedback = COALESCE(?, feedback), "
    "eval_seconds = COALESCE(?, eval_seconds), novelty = COALESCE(?, novelty), cell = COALESCE(?, cell), "
    "archive_event = COALESCE(?, archive_event), fail_stage = COALESCE(?, fail_stage), "
    "fail_reason = COALESCE(?, fail_reason), tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, "
    "cost = cost + ?, model = COALESCE(?, model), duplicate_of = COALESCE(?, duplicate_of), "
    "mutated_at = COALESCE(mutated_at, ?), evaluated_at = COALESCE(evaluated_at, ?), "
    "finished_at = COALESCE(finished_at, ?), finish_seq = COALESCE(finish_seq, ?) WHERE id = ?"
)


class ArchiveDB(StoreConnection, Reads):
    """One campaign's SQLite store.

    >>> db = ArchiveDB("campaign.db")            # created and migrated if needed
    >>> ro = ArchiveDB("campaign.db", readonly=True)   # never writes; safe beside the writer

    Not for concurrent use from several threads at once (one connection, one transaction).
    """

    _declared_ndesc: int | None = None  # from the run row's descriptor_schema, once read
    # a compact genome's lineage is stored in full at least every this many regenerations (archive_db.recipes);
    # 1: every genome in full
    materialise_every: int = MATERIALISE_EVERY
    _genome_store: Genomes | None = None

    # ---- run header ---------------------------------------------------------------------

    def create_run(
        self,
        *,
        name: str,
        task: str,
        seed: int,
        config: dict[str, Any],
        descriptor_schema: dict[str, Any],
        state: dict[str, Any] | None = None,
    ) -> None:
        """Write the single run row. ``RunExistsError`` if the database already holds a run."""
        now = time.time()
        row = {
            "id": 1,
            "name": str(name),
            "task": str(task),
            "seed": as_int(seed, "seed"),
            "config": to_json(config, "config"),
            "descriptor_schema": to_json(descriptor_schema, "descriptor_schema"),
            "state": to_json(state if state is not None else {}, "state"),
            "status": "created",
            "created_at": now,
            "schema_version": SCHEMA_VERSION,
            "updated_at": now,
        }
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM runs").fetchone():
                raise RunExistsError(f"{self.path} already holds a run; one database is one campaign")
            self.db.table("runs").insert(row)
        self._declared_ndesc = None

    def get_run(self) -> dict[str, Any] | None:
        rows = dict_rows(self.conn.execute("SELECT * FROM runs WHERE id = 1"), ("config", "descriptor_schema", "state"))
        return rows[0] if rows else None

    def update_run(self, *, status: str | None = None, state: dict[str, Any] | None = None,
                   config: dict[str, Any] | None = None) -> None:
        """Change the run's status, driver state and/or config (what a resumed session runs with)."""
        if status is not None and status not in RUN_STATUSES:
            raise InvalidValueError(f"run status must be one of {RUN_STATUSES}, not {status!r}")
        state_json = to_json(state, "state") if state is not None else None
        config_json = to_json(config, "config") if config is not None else None
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE runs SET status = COALESCE(?, status), state = COALESCE(?, state), "
                "config = COALESCE(?, config), updated_at = ? WHERE id = 1",
                (status, state_json, config_json, time.time()),
            )
            if cur.rowcount == 0:
                raise ArchiveDBError(f"{self.path} holds no run yet; call create_run first")

    def _descriptor_len(self) -> int | None:
        """The length every agent's descriptors must have (see the module's docstring)."""
        if self._declared_ndesc is None:
            row = self.conn.execute("SELECT descriptor_schema FROM runs WHERE id = 1").fetchone()
            schema = json.loads(row[0]) if row is not None else None
            names = schema.get("names") if isinstance(schema, dict) else None
            if isinstance(names, list):
                self._declared_ndesc = len(names)
            else:
                first = self.conn.execute(
                    "SELECT json_array_length(descriptors) FROM agents WHERE descriptors IS NOT NULL LIMIT 1"
                ).fetchone()
                return None if first is None else int(first[0])
        return self._declared_ndesc

    # ---- genomes ------------------------------------------------------------------------

    @property
    def genomes(self) -> Genomes:
        """Genome reads (regenerating compact ones) and the compact writes, with their cache."""
        if self._genome_store is None or self._genome_store.conn is not self.conn:
            self._genome_store = Genomes(self.conn)
        return self._genome_store

    def put_genome(self, files: dict[str, bytes]) -> str:
        """Store a file tree content-addressed; returns its genome hash."""
        genome = genome_parts(files)
        with self.transaction():
            store_genomes(self.conn, {genome.hash: genome})
        return genome.hash

    def get_genome(self, genome_hash: str) -> dict[str, bytes]:
        """The file tree with ``genome_hash``, stored in full or regenerated from a recipe (RegenerationError
        if that does not give its bytes); InvalidValueError for a hash the store does not hold. A compact genome
        asked for by hash alone is found by scanning the compact agents (prefer :meth:`agent_files`)."""
        return self.genomes.files(genome_hash)

    def agent_files(self, agent_id: int) -> dict[str, bytes]:
        """The agent's files; ``{}`` while it has no genome yet (proposed, or failed in mutation). A compact
        genome is regenerated and checked against its hash (RegenerationError naming the agent if it fails)."""
        return self.genomes.agent_files(agent_id)

    def materialise(self, agent_ids: Iterable[int]) -> int:
        """Store these agents' genomes in full (what is read often: no regeneration again); returns how many
        were compact."""
        self._writable()
        ids = sorted({as_int(a, "agent id") for a in agent_ids})
        with self.transaction():
            compact = [r[0] for r in self.conn.execute(
                "SELECT agent_id FROM recipes WHERE agent_id IN (SELECT value FROM json_each(?))", (ids_json(ids),))]
            for aid in compact:
                genome = genome_parts(self.agent_files(aid))
                store_genomes(self.conn, {genome.hash: genome})
            self.conn.execute("DELETE FROM recipes WHERE agent_id IN (SELECT value FROM json_each(?))",
                              (ids_json(compact),))
        return len(compact)

    def check_integrity(self, *, regenerate: bool = True) -> IntegrityReport:
        """SQLite's checks, every stored genome against its hash, every recipe (and with ``regenerate`` every
        compact genome regenerated): :func:`archive_db.integrity.check_integrity`."""
        return check_integrity(self.conn, regenerate=regenerate)

    def _compact(self, checked: list[CheckedOutcome], genomes: dict[str, GenomeParts]) -> list[RecipeRow]:
        """The recipes rows of the outcomes kept compact (their genomes leave ``genomes``)."""
        items: list[CompactCandidate] = []
        full: set[str] = set()
        batch_hash: dict[int, str] = {}
        methods: dict[tuple[str, int, str, str], int] = {}  # this transaction's: a batch's children share one or two
        for c in checked:
            if c.genome is None:
                continue
            batch_hash[c.id] = c.genome.hash
            found = None if c.recipe is None else regenerator(c.recipe.operator, c.recipe.version)
            if c.recipe is None or found is None:
                full.add(c.genome.hash)
                continue
            key = method_key(c.recipe, found[1])  # the row's own key: 1 and 1.0 are different methods there
            if key not in methods:
                methods[key] = self.genomes.method_id(c.recipe, found[1])
            items.append(CompactCandidate(c.id, c.genome, methods[key]))
        return self.genomes.compact(items, genomes, full=full, batch_hash=batch_hash, every=self.materialise_every)

    def lineage_counts(self) -> Counts:
        """(children, discoveries) per agent id as int64 arrays: what ``children_counts`` and
        ``discovery_counts`` give, read from the lineage snapshot and the rows after it (archive_db.lineage);
        a writer outside a transaction refreshes the snapshot when it lags."""
        return lineage_counts(self.conn, refresh=not self.readonly and not self.conn.in_transaction)

    # ---- lifecycle ----------------------------------------------------------------------

    def propose(self, proposals: Iterable[Proposal]) -> None:
        """Write new children (status ``proposed``) with their parents, operators and seeds.
        Depth is computed here. Parents must already exist or come earlier in the batch."""
        self._writable()
        props = [check_proposal(p) for p in proposals]
        if not props:
            return
        seen: set[int] = set()
        for p in props:
            if p.id in seen:
                raise InvalidValueError(f"agent id {p.id} appears twice in one propose() batch")
            seen.add(p.id)
        parents = {q for p in props for q in (p.parent_id, p.parent2_id) if q is not None} - seen
        now = time.time()
        conn = self.conn
        with self.transaction():
            dup = conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?)) LIMIT 1", (ids_json(seen),)
            ).fetchone()
            if dup:
                raise InvalidValueError(f"agent id {dup[0]} already exists")
            depth: dict[int, int] = dict(conn.execute(
                "SELECT id, depth FROM agents WHERE id IN (SELECT value FROM json_each(?))", (ids_json(parents),)
            ).fetchall()) if parents else {}
            rows = []
            for p in props:
                d = 0
                if p.parent_id is not None:
                    if p.parent_id not in depth:
                        raise UnknownAgentError(
                            f"unknown parent id {p.parent_id} for agent {p.id} "
                            "(parents must exist or be proposed earlier in the batch)"
                        )
                    d = depth[p.parent_id] + 1
                if p.parent2_id is not None and p.parent2_id not in depth:
                    raise UnknownAgentError(f"unknown parent2 id {p.parent2_id} for agent {p.id}")
                depth[p.id] = d
                rows.append((p.id, p.parent_id, p.parent2_id, d, p.operator, p.model, int(p.seed), now))
            conn.executemany(
                "INSERT INTO agents(id, parent_id, parent2_id, depth, status, operator, model, seed, created_at) "
                "VALUES (?, ?, ?, ?, 'proposed', ?, ?, ?, ?)",
                rows,
            )

    def record(self, outcomes: Iterable[Outcome]) -> None:
        """Apply a batch of forward steps. Everything is checked first (:func:`check_outcome`); on
        any error this raises (UnknownAgentError, InvalidValueError, InvalidTransitionError) and
        writes nothing."""
        self._writable()
        outs = list(outcomes)
        if not outs:
            return
        ids = []
        for o in outs:
            if not isinstance(o, Outcome):
                raise InvalidValueError(f"record() takes Outcome objects, not {type(o).__name__}")
            ids.append(as_int(o.id, "agent id"))
        with self.transaction():
            state = {r[0]: AgentState(r[1], bool(r[2]), bool(r[3])) for r in self.conn.execute(
                "SELECT id, status, genome_hash IS NOT NULL, fitness IS NOT NULL AND descriptors IS NOT NULL "
                "FROM agents WHERE id IN (SELECT value FROM json_each(?))", (ids_json(set(ids)),))}
            n_descriptors = self._descriptor_len()
            checked: list[CheckedOutcome] = []
            for o, aid in zip(outs, ids, strict=True):
                if aid not in state:
                    raise UnknownAgentError(f"unknown agent id {aid}")
                c = check_outcome(o, state[aid], n_descriptors=n_descriptors)
                state[aid] = c.state
                if n_descriptors is None and c.descriptors is not None:
                    n_descriptors = len(c.descriptors)
                checked.append(c)
            genomes = self._check_references(checked)
            recipes = self._compact(checked, genomes)
            store_genomes(self.conn, genomes, lambda: self._delta_bases(checked, genomes))
            self.conn.executemany(_UPDATE_SQL, self._update_rows(checked))
            if recipes:
                self.conn.executemany("INSERT OR IGNORE INTO recipes(agent_id, method, hops) VALUES (?, ?, ?)", recipes)

    def _check_references(self, checked: list[CheckedOutcome]) -> dict[str, GenomeParts]:
        """Refuse a genome hash given without its files that is neither stored nor given earlier
        in the batch, and a ``duplicate_of`` that names no agent. Returns the genomes to store."""
        genomes: dict[str, GenomeParts] = {}
        by_reference: set[str] = set()
        for c in checked:
            if c.genome is not None:
                genomes.setdefault(c.genome.hash, c.genome)
            elif c.genome_hash is not None and c.genome_hash not in genomes:
                by_reference.add(c.genome_hash)
        if by_reference:
            found = {r[0] for r in self.conn.execute(
                "SELECT hash FROM genomes WHERE hash IN (SELECT value FROM json_each(?))",
                (json.dumps(sorted(by_reference)),))}
            if by_reference - found:
                raise InvalidValueError(f"unknown genome hash {sorted(by_reference - found)[0]!r} in record()")
        dup_refs = {c.duplicate_of for c in checked if c.duplicate_of is not None}
        if dup_refs:
            found_ids = {r[0] for r in self.conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?))", (ids_json(dup_refs),))}
            if dup_refs - found_ids:
                raise UnknownAgentError(f"duplicate_of names unknown agent id {min(dup_refs - found_ids)}")
        return genomes

    def _delta_bases(self, checked: list[CheckedOutcome], genomes: dict[str, GenomeParts]) -> dict[str, str]:
        """Each new file's blob hash -> the blob of the same path in its agent's parent, where the parent's
        genome is stored in full: the base it may be stored as a delta of."""
        kids = {c.id: c.genome for c in checked if c.genome is not None and c.genome.hash in genomes}
        if not kids:
            return {}
        bases: dict[str, str] = {}
        for kid, parent_manifest in self.conn.execute(
                "SELECT c.id, g.manifest FROM agents AS c JOIN agents AS p ON p.id = c.parent_id "
                "JOIN genomes AS g ON g.hash = p.genome_hash WHERE c.id IN (SELECT value FROM json_each(?))",
                (ids_json(kids),)):
            parent_files: dict[str, str] = json.loads(parent_manifest)
            for path, blob in json.loads(kids[kid].manifest).items():
                base = parent_files.get(path)
                if base is not None and base != blob:
                    bases.setdefault(blob, base)
        return bases

    def _update_rows(self, checked: list[CheckedOutcome]) -> list[tuple[object, ...]]:
        """The UPDATE parameters of each checked outcome; terminal ones get the next finish_seq."""
        now = time.time()
        seq: int | None = None
        rows: list[tuple[object, ...]] = []
        for c in checked:
            finish_seq = finished_at = None
            if c.status in TERMINAL_STATUSES:
                if seq is None:
                    seq = self._count("SELECT COALESCE(MAX(finish_seq), 0) FROM agents WHERE finish_seq IS NOT NULL")
                seq += 1
                finish_seq, finished_at = seq, now
            rows.append((
                c.status, c.genome_hash, c.fitness, None if c.descriptors is None else json.dumps(c.descriptors),
                c.metrics, c.feedback, c.eval_seconds, c.novelty, c.cell, c.archive_event, c.fail_stage,
                c.fail_reason, c.tokens_in, c.tokens_out, c.cost, c.model, c.duplicate_of,
                now if c.genome_hash is not None or c.status in NEEDS_GENOME else None,
                now if c.fitness is not None or c.status in NEEDS_FITNESS else None,
                finished_at, finish_seq, c.id,
            ))
        return rows

    # ---- evaluations --------------------------------------------------------------------

    def add_evaluation(self, agent_id: int, *, stage: str, seconds: float, exit_status: int | None = None,
                       fitness: float | None = None, result: dict[str, Any] | None = None, stdout_tail: str = "",
                       stderr_tail: str = "", failure_kind: str | None = None,
                       started_at: float | None = None) -> None:
        """Record one evaluation stage of an agent (several per agent allowed)."""
        self.add_evaluations([Evaluation(
            agent_id=agent_id, stage=stage, seconds=seconds, exit_status=exit_status, fitness=fitness,
            result=result, stdout_tail=stdout_tail, stderr_tail=stderr_tail, failure_kind=failure_kind,
            started_at=started_at,
        )])

    def add_evaluations(self, evaluations: Iterable[Evaluation]) -> None:
        """Record many :class:`Evaluation` records at once (all or none)."""
        self._writable()
        now = time.time()
        rows = [check_evaluation(ev, now) for ev in evaluations]
        if not rows:
            return
        ids = {r[0] for r in rows}
        with self.transaction():
            agents = self.conn.execute(
                "SELECT id, status IN ('archived', 'rejected', 'failed'), fitness FROM agents "
                "WHERE id IN (SELECT value FROM json_each(?))", (ids_json(ids),)).fetchall()
            unknown = ids - {r[0] for r in agents}
            if unknown:
                raise UnknownAgentError(f"unknown agent id {min(unknown)}")
            finished = {aid: fitness for aid, terminal, fitness in agents if terminal}
            runs = evaluation_runs(rows, finished)
            first_id = self._count("SELECT COALESCE(MAX(id), 0) + 1 FROM evaluation_runs")
            self.conn.executemany(
                "INSERT INTO evaluation_runs(id, agents, stage, started_at, seconds, exit_status, fitness, result, "
                "stdout_tail, stderr_tail, failure_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(first_id + i, len(run.agent_ids), *run.columns) for i, run in enumerate(runs)])
            self.conn.executemany(
                "INSERT INTO evaluation_agents(agent_id, run_id) VALUES (?, ?)",
                [(aid, first_id + i) for i, run in enumerate(runs) for aid in run.agent_ids])

    def add_transcript(self, agent_id: int, *, calls: int, rejected: int, tokens_in: int, tokens_out: int,
                       cost: float, limit_hit: str | None, entries: list[dict[str, Any]], dropped: int = 0) -> None:
        """Record what an agent did with the model gateway in one evaluation (``openended.gateway.GatewayUsage``)."""
        self._writable()
        with self.transaction():
            if self.conn.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id,)).fetchone() is None:
                raise UnknownAgentError(f"unknown agent id {agent_id}")
            self.conn.execute(
                "INSERT INTO transcripts(agent_id, created_at, calls, rejected, tokens_in, tokens_out, cost, "
                "limit_hit, entries, dropped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id, time.time(), int(calls), int(rejected), int(tokens_in), int(tokens_out), float(cost),
                 limit_hit, json.dumps(entries, allow_nan=False), int(dropped)))

    # ---- archive occupancy --------------------------------------------------------------

    def set_elites(self, elites: Mapping[int, int]) -> None:
        """Upsert cell -> agent_id (an elite's fitness and descriptors are its agent's)."""
        self._writable()
        pairs = [(as_int(c, "cell"), as_int(a, "agent id")) for c, a in dict(elites).items()]
        if not pairs:
            return
        with self.transaction():
            agent_ids = {a for _, a in pairs}
            found = {r[0] for r in self.conn.execute(
                "SELECT id FROM agents WHERE id IN (SELECT value FROM json_each(?))", (ids_json(agent_ids),))}
            if agent_ids - found:
                raise UnknownAgentError(f"unknown agent id {min(agent_ids - found)} in set_elites()")
            self.conn.executemany(
                "INSERT INTO elites(cell, agent_id) VALUES (?, ?) "
                "ON CONFLICT(cell) DO UPDATE SET agent_id = excluded.agent_id", pairs)

    def remove_elites(self, cells: Iterable[int]) -> None:
        self._writable()
        rows = [(as_int(c, "cell"),) for c in cells]
        with self.transaction():
            self.conn.executemany("DELETE FROM elites WHERE cell = ?", rows)

    # ---- stats --------------------------------------------------------------------------

    def record_stats(self, **snapshot: object) -> None:
        """Append a progress snapshot. Known keys go to columns (``at`` defaults to now), any
        other key (and an ``extra`` dict) goes into the ``extra`` JSON column."""
        self._writable()
        extra_arg = snapshot.pop("extra", None)
        if extra_arg is not None and not isinstance(extra_arg, Mapping):
            raise InvalidValueError(f"stats extra must be a dict, not {type(extra_arg).__name__}")
        extra: dict[str, object] = dict(extra_arg or {})
        row: dict[str, object] = {}
        for key, value in snapshot.items():
            if key in _STATS_COLUMNS:
                if isinstance(value, float):
                    finite(value, f"stats {key}")
                row[key] = value
            else:
                extra[key] = value
        row.setdefault("at", time.time())
        row["extra"] = to_json(extra, "stats extra")
        with self.transaction():
            self.db.table("stats").insert(row)
