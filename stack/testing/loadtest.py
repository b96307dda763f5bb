"""Thresholds for the tests' own load-test runs (tests/e2e): a run on a shared, busy test machine is
judged on what it proves (it ran, both sides counted, the report is whole), not on the reference
machine's latencies, which `make loadtest` holds the stack to."""

GENEROUS = """
[overall]
max_error_ratio = 0.01
min_throughput_ratio = 0.5
[groups.read]
routes = ["GET /items", "GET /items/{item_id}", "GET /users/{user_id}"]
p95_ms = 3000
p99_ms = 5000
[groups.write]
routes = ["POST /users", "POST /items", "PATCH /items/{item_id}", "DELETE /items/{item_id}"]
p95_ms = 3000
p99_ms = 5000
"""
