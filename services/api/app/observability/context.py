from contextvars import ContextVar

# Set by the request middleware; each request runs in its own task, so it never leaks across.
request_id_var: ContextVar[str] = ContextVar("request_id", default="")
