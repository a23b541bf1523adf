"""Layer 0: database machinery with no domain knowledge (pipelined rows, locks, the storage class)."""
