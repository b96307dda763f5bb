"""The problem details document (RFC 9457) every error answers with, as the OpenAPI declares it.

app.errors builds the documents (with orjson, without this model: error paths stay cheap); this
model is their contract, published so clients and schemathesis can check every error against it.
"""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class ProblemFieldError(BaseModel):
    field: str = Field(description="The field's dotted path, or the location when it has none.")
    location: str = Field(description="body, query, path or header.")
    message: str
    type: str = Field(description="A stable machine-readable code, e.g. string_too_long.")


class Problem(BaseModel):
    # Extension members (RFC 9457 section 3.2) are allowed: readiness adds `checks`.
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URI naming the kind of problem.")
    title: str
    status: Annotated[int, Field(ge=400, le=599)]
    detail: str = Field(description="What went wrong with this request, for humans.")
    instance: str = Field(description="The request path.")
    request_id: str = Field(description="Also in the X-Request-ID header and every log line.")
    errors: list[ProblemFieldError] | None = Field(
        default=None, description="Validation errors only: one entry per invalid field."
    )
