"""The ceilings the stack is compared with, each served by one Uvicorn process like a replica."""
