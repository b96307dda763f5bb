"""The load test: Locust scenarios that drive the stack, an SLO gate and a report (README.md).

Only `locustfile.py` and the modules it imports (users, options, export, sources, dataset) import
Locust, which monkeypatches the standard library with gevent when imported. Everything else here
(the orchestrator, the gate, the report) is plain Python and never imports Locust, so it can run
inside pytest and next to matplotlib.
"""
