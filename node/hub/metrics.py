"""Prometheus metrics of one hub, in its own registry (no module-level globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# sub-millisecond buckets: per-batch stages of small batches take well under 1 ms
STAGE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                 10.0, 30.0)


class HubMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.batches = Counter("cx_batches", "Batches by department and result (accepted, redelivered, quarantined)",
                               ["dept", "result"], registry=self.registry)
        self.records = Counter("cx_records", "Records by department and result (accepted, rejected, duplicate)",
                               ["dept", "result"], registry=self.registry)
        self.quarantined = Counter("cx_quarantined_messages", "Messages sent to quarantine, by the department "
                                   "whose broker user sent them (empty when none) and reason code", ["dept", "reason"],
                                   registry=self.registry)
        self.sequence_events = Counter("cx_sequence_events", "Sequence gaps, late fills and replays by department",
                                       ["dept", "kind"], registry=self.registry)
        self.stage_seconds = Histogram("cx_ingest_stage_seconds", "Time per batch in each ingest stage "
                                       "(parse, verify, validate, store, publish, ack)", ["stage"],
                                       buckets=STAGE_BUCKETS, registry=self.registry)
        self.ledger_size = Gauge("cx_ledger_size", "Leaves in each department's ledger", ["dept"],
                                 registry=self.registry)
        self.ingest_errors = Counter("cx_ingest_errors", "Attempts that found the store unavailable (connection "
                                     "lost, disk full, database locked); the message was kept", registry=self.registry)
        self.refusals = Counter("cx_refusals", "Signed refusals published to departments, by department and "
                                "reason code", ["dept", "reason"], registry=self.registry)
        self.consumer_up = Gauge("cx_ingest_consumer_up", "1 while the hub is connected to the broker and consuming "
                                 "the ingest queue", registry=self.registry)
        self.in_progress = Gauge("cx_ingest_in_progress", "Messages taken from the ingest queue and not yet answered",
                                 registry=self.registry)
        self.last_outcome = Gauge("cx_ingest_last_outcome_timestamp_seconds", "When the hub last decided a "
                                  "message's outcome (stored, quarantined or heartbeat), Unix time",
                                  registry=self.registry)
        self.projection_lag = Gauge("cx_projection_lag_versions", "Accepted record versions the derived views "
                                    "(timeliness, credit, search) have not taken in yet; while batches queue up they "
                                    "catch up in lulls, at most [hub] projection_max_lag_seconds late",
                                    registry=self.registry)
        self.heartbeats = Counter("cx_heartbeats", "Signed heartbeats received by department", ["dept"],
                                  registry=self.registry)
        self.receipts_unroutable = Counter("cx_receipts_unroutable", "Receipts the broker could not route: the "
                                           "sending node has no receipts queue (not enrolled)", ["dept"],
                                           registry=self.registry)
