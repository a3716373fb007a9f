"""Alembic autogenerate support, for apps that keep the tables in their own migrations (``db=db``).

Alembic writes a column of a type from outside SQLAlchemy as ``module.Class()`` without
importing the module, so a revision with the earnings tables (amounts are
:class:`~flask_earnings.money.Money`, times :class:`~flask_earnings.storage.UTCDateTime`)
would stop at ``NameError: name 'flask_earnings' is not defined``. :func:`render_item` is
Alembic's hook for exactly this; with Flask-Migrate::

    from flask_earnings.migrations import render_item

    Migrate(app, db, render_item=render_item)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from .money import Money
from .storage import UTCDateTime

if TYPE_CHECKING:
    from alembic.autogenerate.api import AutogenContext

#: The extension's own column types, as a migration names them.
COLUMN_TYPES = (Money, UTCDateTime)


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Alembic's ``render_item`` hook: the extension's column types as ``flask_earnings.<module>.<Type>()``,
    with the import the revision needs.

    Anything else is ``False`` (Alembic's own rendering), so an app with a hook of its own can
    ask this one first: ``return render_item(type_, obj, context) or my_render_item(...)``.
    """
    if type_ == "type" and isinstance(obj, COLUMN_TYPES):
        module = type(obj).__module__
        autogen_context.imports.add(f"import {module}")
        return f"{module}.{type(obj).__name__}()"
    return False
