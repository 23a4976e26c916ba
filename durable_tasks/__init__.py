"""durable-tasks."""
