"""NATS: the doorbell between replicas and the broadcast bus for channels."""
