"""The API service of the FastAPI production stack."""

__version__ = "0.1.0"
