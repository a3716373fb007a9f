"""Money is :class:`decimal.Decimal`, computed exactly and stored so it reads back equal.

SQLite has no exact decimal type: a ``NUMERIC`` column hands back floats. So on SQLite
amounts are stored as their decimal text and summed with an exact aggregate registered on
the connection; on PostgreSQL (and other databases) they are plain ``NUMERIC``.
"""

from __future__ import annotations

import decimal
import sqlite3
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import GenericFunction

#: Context for every money calculation. Its precision is far above what validated rates
#: times token counts need, and ``Inexact`` is trapped: a result is exact or an error,
#: never silently rounded.
MONEY_CONTEXT = decimal.Context(
    prec=100,
    rounding=decimal.ROUND_HALF_EVEN,
    traps=[
        decimal.InvalidOperation,
        decimal.Inexact,
        decimal.Overflow,
        decimal.DivisionByZero,
    ],
)

ZERO = Decimal(0)
ONE = Decimal(1)

SQLITE_SUM_FUNCTION = "earnings_decimal_sum"


def canonical(amount: Decimal) -> Decimal:
    """The same amount without trailing zeros (``1.8510`` → ``1.851``, ``3.000`` → ``3``)."""
    _, digits, exponent = amount.as_tuple()
    if exponent == 0 or (isinstance(exponent, int) and exponent < 0 and digits[-1] != 0):
        return amount  # already as short as it gets
    reduced = amount.normalize(MONEY_CONTEXT)
    return reduced if reduced.as_tuple().exponent <= 0 else reduced.quantize(ONE, context=MONEY_CONTEXT)  # type: ignore[operator]


def format_money(amount: Decimal) -> str:
    """Plain decimal notation without trailing zeros (``0.0000001``, not ``1E-7``; ``1.851``,
    not ``1.8510``), as JSON, logs and SQLite get it."""
    return format(canonical(amount), "f")


class Money(sa.types.TypeDecorator[Decimal]):
    """An exact decimal column: ``NUMERIC`` where the database has it, text on SQLite."""

    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(100))
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return format_money(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(value)


class money_sum(GenericFunction[Decimal]):  # noqa: N801 - SQL functions are lower case
    """``SUM`` of a :class:`Money` column that stays exact on SQLite too.

    On SQLite the connection needs :func:`register_sqlite_functions` first.
    """

    type = Money()
    inherit_cache = True


@compiles(money_sum)
def _compile_money_sum(element: money_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(money_sum, "sqlite")
def _compile_money_sum_sqlite(element: money_sum, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{SQLITE_SUM_FUNCTION}({compiler.process(element.clauses, **kw)})"


class _DecimalSum:
    """SQLite aggregate: the exact sum of decimal texts, as text (``NULL`` for no rows)."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: str | int | None) -> None:
        if value is None:
            return
        with decimal.localcontext(MONEY_CONTEXT):
            self.total = (self.total or ZERO) + Decimal(value)

    def finalize(self) -> str | None:
        return None if self.total is None else format_money(self.total)


def register_sqlite_functions(dbapi_connection: Any) -> None:
    """Make :class:`money_sum` available on one SQLite connection (cheap, idempotent)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        # typeshed wants finalize() to return a number; SQLite takes text as well.
        dbapi_connection.create_aggregate(SQLITE_SUM_FUNCTION, 1, _DecimalSum)  # type: ignore[arg-type]
