"""HEAD is served wherever GET is: the same status and headers, no body; `Allow` stays true."""

import io
import json

import httpx

from stack.testing.api import assert_problem, create_item, create_user


async def _same_as_get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    got = await client.get(url)
    head = await client.head(url)
    assert head.status_code == got.status_code, (url, head.status_code)
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if not url.startswith(("/health/ready", "/metrics")):  # bodies that change between calls
        assert head.headers["content-length"] == got.headers["content-length"]
    return head


async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient) -> None:
    owner = await create_user(client)
    item = await create_item(client, owner)
    for url in ["/health/live", "/health/ready", "/items", f"/items/{item['id']}", "/metrics"]:
        head = await _same_as_get(client, url)
        assert head.status_code == 200, url
    head = await _same_as_get(client, f"/items/{item['id']}")
    assert head.headers["etag"] == '"1"'


async def test_head_of_a_missing_item_is_a_bodiless_404(client: httpx.AsyncClient) -> None:
    head = await client.head("/items/999999999")
    assert head.status_code == 404
    assert head.content == b""


async def test_allow_lists_head_only_where_it_is_served(client: httpx.AsyncClient) -> None:
    for url in ["/health/live", "/items"]:
        refused = await client.put(url)
        assert_problem(refused, 405)
        methods = refused.headers["allow"].split(", ")
        assert {"HEAD", "GET"} <= set(methods)
        assert (await client.head(url)).status_code == 200


async def test_a_head_is_logged_and_counted_as_head_on_its_route(
    client: httpx.AsyncClient, json_log: io.StringIO
) -> None:
    assert (await client.head("/items")).status_code == 200
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    access = [(a["method"], a["route"]) for a in lines if a["logger"] == "app.access"]
    assert access == [("HEAD", "/items")]
    metrics = (await client.get("/metrics")).text
    assert 'handler="/items",method="HEAD",status="200"' in metrics
