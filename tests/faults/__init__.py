"""The fault matrix and the concurrency test: real workers on PostgreSQL + Redis under failures."""
