"""Parameterized queries over the API's connection pool (values always travel as parameters)."""
from __future__ import annotations

from typing import Any

from opmas.api.deps import Paging
from opmas.api.state import ApiState


async def fetch_one(state: ApiState, sql: str, params: tuple | list = ()) -> dict[str, Any] | None:
    async with state.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchone()


async def fetch_all(state: ApiState, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
    async with state.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def fetch_page(state: ApiState, columns: str, table: str, filters: list[tuple[str, Any]],
                     order: str, paging: Paging) -> dict[str, Any]:
    """One page of rows plus the total count. ``filters`` are ``(clause, value)`` pairs, each clause
    a code constant with one ``%s`` placeholder; pairs whose value is None are left out.
    ``columns``, ``table`` and ``order`` are code constants too: every value is a parameter."""
    where = [clause for clause, value in filters if value is not None]
    params = [value for _, value in filters if value is not None]
    where_sql = (" WHERE " + " AND ".join(where)) if where else ""
    async with state.pool.connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table}{where_sql}", params)
        total = (await cur.fetchone())["n"]
        cur = await conn.execute(
            f"SELECT {columns} FROM {table}{where_sql} ORDER BY {order} LIMIT %s OFFSET %s",
            [*params, paging.limit, paging.offset],
        )
        items = await cur.fetchall()
    return {"items": items, "total": total, "limit": paging.limit, "offset": paging.offset}


async def execute(state: ApiState, sql: str, params: tuple | list = ()) -> int:
    """Run a statement; returns the number of rows it touched."""
    async with state.pool.connection() as conn:
        cur = await conn.execute(sql, params)
        return cur.rowcount
