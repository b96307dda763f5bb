import httpx

from stack.testing.api import assert_problem, create_user, unique_email


async def test_create_user_returns_token_once(client: httpx.AsyncClient) -> None:
    email = unique_email()
    response = await client.post("/users", json={"email": email.upper(), "name": "Ada"})
    assert response.status_code == 201
    body = response.json()
    assert body["email"] == email  # stored lower-case
    assert len(body["token"]) >= 40
    assert response.headers["location"] == f"/users/{body['id']}"

    me = await client.get("/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json() == {k: v for k, v in body.items() if k != "token"}


async def test_duplicate_email_is_409(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    response = await client.post("/users", json={"email": user.email.upper(), "name": "Twin"})
    body = assert_problem(response, 409)
    assert user.email not in body["detail"]  # emails go only to their owner


async def test_unknown_user_is_404(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/users/999999999"), 404)


async def test_invalid_user_bodies_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"email": "not-an-email", "name": "x"}, "email"),
        ({"email": unique_email(), "name": ""}, "name"),
        ({"email": unique_email(), "name": "x" * 101}, "name"),
        ({"email": unique_email()}, "name"),
        ({"email": unique_email(), "name": "x", "admin": True}, "admin"),
        ({"email": unique_email(), "name": 5}, "name"),
    ]
    for body, field in cases:
        problem = assert_problem(await client.post("/users", json=body), 422)
        assert field in {error["field"] for error in problem["errors"]}, (body, problem)


async def test_malformed_json_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users", content=b'{"email": ', headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"
