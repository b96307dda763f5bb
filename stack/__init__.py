"""Tooling that runs, renders or tests the stack; the API itself imports none of it."""
