"""Prometheus metrics of one node, in its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class NodeMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.rows_read = Counter("cx_node_rows_read", "Source rows read, by stream", ["stream"], registry=r)
        self.records_queued = Counter("cx_node_records_queued", "Valid new or changed records put in the outbox",
                                      ["stream"], registry=r)
        self.rows_rejected = Counter("cx_node_rows_rejected", "Rows rejected locally (mapping or validation)",
                                     ["stream"], registry=r)
        self.records_settled = Counter("cx_node_records_settled", "Records settled by a receipt, by outcome "
                                       "(delivered, rejected, duplicate)", ["state"], registry=r)
        self.batches_sent = Counter("cx_node_batches_sent", "Batches published (first send or resend)", ["kind"],
                                    registry=r)
        self.publish_failures = Counter("cx_node_publish_failures", "Publishes that failed and will be retried",
                                        registry=r)
        self.receipts = Counter("cx_node_receipts", "Receipts by verdict (verified or the alert kind)", ["verdict"],
                                registry=r)
        self.batches_refused = Counter("cx_node_batches_refused", "Batches the hub refused, by reason and what the "
                                       "node did (resealed with its current key, or waiting for people)",
                                       ["reason", "action"], registry=r)
        self.heartbeats = Counter("cx_node_heartbeats", "Heartbeats sent", registry=r)
        self.outbox_depth = Gauge("cx_node_outbox_depth", "Records not yet settled by a receipt", registry=r)
        self.last_receipt = Gauge("cx_node_last_receipt_timestamp_seconds", "When the last receipt was verified",
                                  registry=r)
        self.broker_up = Gauge("cx_node_broker_connected", "1 when connected to the broker", registry=r)
        self.source_errors = Counter("cx_node_source_errors", "Source read errors, by stream", ["stream"], registry=r)
