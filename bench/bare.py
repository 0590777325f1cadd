"""The bare service: aiohttp and psycopg with nothing else, the floor under the ledger's HTTP.

It serves the ledger's own paths, so the very same wrk requests go to both:
- ``POST /v1/accounts/{username}/deposits`` ``{amount, reference}``: one durable INSERT of a
  ~300-byte row (an autocommit statement: one commit), 201;
- ``GET /v1/accounts/{username}/balance``: one SELECT over the index on the user name, 200
  (404 for a user with no row);
- ``GET /health``: 200, no database.
It keeps nothing else: no auth check, no idempotency, no events, no read model. At start it
makes its table in the database it is given and one opening row for each of ``--users`` users
(``u0000`` ...), as the ledger's accounts are opened before the load.

    python -m bench.bare --dsn postgresql://postgres@127.0.0.1/DB --port 8081 --users 1000
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from json import JSONDecodeError

import click
from aiohttp import web
from psycopg_pool import AsyncConnectionPool

POOL_SIZE = 8  # as the ledger's store pool
POOL_TIMEOUT_S = 10.0
# Filler so a row is about the size of a small stored event (~300 bytes with its header).
DETAIL = "x" * 240
POOL = web.AppKey("pool", AsyncConnectionPool)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bare_deposits ("
    " id bigserial PRIMARY KEY, username text NOT NULL, amount bigint NOT NULL,"
    " reference text NOT NULL, detail text NOT NULL,"
    " recorded_at timestamptz NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS bare_deposits_username ON bare_deposits (username)",
)
SEED = (
    "INSERT INTO bare_deposits (username, amount, reference, detail)"
    " SELECT format('u%%s', lpad(n::text, 4, '0')), 0, 'opening', %s"
    " FROM generate_series(0, %s - 1) AS n"
)
INSERT = (
    "INSERT INTO bare_deposits (username, amount, reference, detail) VALUES (%s, %s, %s, %s)"
)
BALANCE = (
    "SELECT count(*), coalesce(sum(amount), 0) FROM bare_deposits WHERE username = %s"
)


def create_app(dsn: str, users: int) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = AsyncConnectionPool(
            dsn, min_size=POOL_SIZE, max_size=POOL_SIZE, kwargs={"autocommit": True},
            timeout=POOL_TIMEOUT_S, open=False,
        )
        await pool.open(wait=True, timeout=POOL_TIMEOUT_S)
        async with pool.connection() as connection:
            for statement in SCHEMA:
                await connection.execute(statement)
            counted = await connection.execute("SELECT count(*) FROM bare_deposits")
            found = await counted.fetchone()
            if found is not None and found[0] == 0:
                await connection.execute(SEED, (DETAIL, users))
        app[POOL] = pool
        yield
        await pool.close()

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.router.add_routes([
        web.post("/v1/accounts/{username}/deposits", deposit),
        web.get("/v1/accounts/{username}/balance", balance),
        web.get("/health", health),
    ])
    return app


async def deposit(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except JSONDecodeError:
        raise web.HTTPBadRequest(text="malformed JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPUnprocessableEntity(text="the body is an object")
    amount, reference = body.get("amount"), body.get("reference")
    if type(amount) is not int or not isinstance(reference, str):
        raise web.HTTPUnprocessableEntity(text="amount is an integer, reference a string")
    username = request.match_info["username"]
    async with request.app[POOL].connection() as connection:
        await connection.execute(INSERT, (username, amount, reference, DETAIL))
    return web.json_response(
        {"username": username, "amount": amount, "reference": reference}, status=201
    )


async def balance(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    async with request.app[POOL].connection() as connection:
        row = await (await connection.execute(BALANCE, (username,))).fetchone()
    if row is None or row[0] == 0:
        raise web.HTTPNotFound(text="no such user")
    return web.json_response({"username": username, "posted": int(row[1])})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@click.command()
@click.option("--dsn", required=True, help="A database of its own (the table is made in it).")
@click.option("--port", required=True, type=click.IntRange(1, 65535))
@click.option("--users", default=1000, show_default=True, type=click.IntRange(1, 10_000))
def main(dsn: str, port: int, users: int) -> None:
    web.run_app(create_app(dsn, users), host="127.0.0.1", port=port, print=None,
                access_log=None, handler_cancellation=False)


if __name__ == "__main__":
    main()
