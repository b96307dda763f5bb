"""Run the stack's servers as local processes (no Docker)."""
