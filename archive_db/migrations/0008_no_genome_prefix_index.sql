-- 0008: no index over every agent's genome hash (issue 18: ~19 bytes a child). Nothing in openended finds an
-- agent by its genome: a genome is read through its agent (ArchiveDB.agent_files) or, stored in full, by its
-- hash in genomes. ArchiveDB.get_genome(hash) of a compact genome, which has no genomes row, now finds an
-- agent with that hash by scanning the compact agents (seconds at 10^7 agents; it is not on any hot path).
DROP INDEX IF EXISTS idx_agents_genome_prefix;
