"""The wire protocol: keys, batches, Merkle proofs, receipts, schemas. Pure; no I/O beyond key files."""
