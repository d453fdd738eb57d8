-- 0010: code blobs stored as deltas (issue 18). A child's file is most often its parent's with a few lines
-- changed; zstd with the parent's file as its dictionary stores such a file in tens of bytes where zlib alone
-- takes hundreds. A blob whose base is set holds zstd compressed with that blob's (uncompressed) content as a
-- raw dictionary; compressed is then 1. depth: how many deltas a read decodes to reach the blob (0 without a
-- base; the store bounds it, so that a read stays short). A blob keeps its hash: the sha256 of its content,
-- checked whenever a delta is decoded.
ALTER TABLE blobs ADD COLUMN base INTEGER REFERENCES blobs(id);
ALTER TABLE blobs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0 CHECK (depth >= 0);
-- The deltas of a blob: with foreign keys on, deleting a blob looks for rows naming it as their base.
CREATE INDEX IF NOT EXISTS idx_blobs_base ON blobs(base) WHERE base IS NOT NULL;
