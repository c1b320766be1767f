"""Benchmarks: latency statistics, the backend/model latency matrix, and their reports (JSON, markdown, PNG)."""
