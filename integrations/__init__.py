"""Optional adapters to outside systems (Kafka, Flower, beat), each behind its own extra."""
