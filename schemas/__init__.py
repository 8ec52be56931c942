"""JSON Schema (2020-12) files for every record type, the envelope and the receipt, and their rules."""
