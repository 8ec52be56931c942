"""The department node (前置机): read sources, map, validate, outbox, signed delivery, receipts."""
