"""`make bench`: the stack measured against its ceilings, side by side in one run."""
