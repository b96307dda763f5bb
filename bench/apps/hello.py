"""FastAPI's "hello world": the unit every path of the stack is measured in."""

from fastapi import FastAPI

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/hello")
async def hello() -> dict[str, str]:
    return {"message": "ok"}
