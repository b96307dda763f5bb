"""The exceptions domain code raises; each carries its HTTP status and problem type."""


class ProblemError(Exception):
    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class NotFoundError(ProblemError):
    status, title, slug = 404, "Not Found", "not-found"


class ConflictError(ProblemError):
    status, title, slug = 409, "Conflict", "conflict"


class UnauthorizedError(ProblemError):
    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="api"'})


class ForbiddenError(ProblemError):
    status, title, slug = 403, "Forbidden", "forbidden"


class PreconditionFailedError(ProblemError):
    status, title, slug = 412, "Precondition Failed", "precondition-failed"


class UnsupportedMediaTypeError(ProblemError):
    status, title, slug = 415, "Unsupported Media Type", "unsupported-media-type"
