"""The hub: verified ingest, provenance store, per-department ledgers, signed receipts, API."""
