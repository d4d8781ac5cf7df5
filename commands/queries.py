"""The reads every execute makes, their SQL compiled once.

Django compiles a queryset's SQL each time it is evaluated: for a one-row filter that is
most of the read's cost on SQLite (0.25 ms for the key, of which the query itself takes
0.02 ms; docs/performance.md). An execute reads its API key by prefix, its server by id or
name and its rule by action type, each on every request. `OneRow` compiles such a
queryset once per thread's database connection, with markers where the values go, then
only runs the SQL with the values in their place and builds the instance as the ORM
does (its converters, `Model.from_db`, select_related objects). The queryset is built by
the ORM: nothing here is hand-written SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators

from commands.models import storable


class OneRow:
    """At most one row of `build(*markers)` (a queryset on one model, no annotations):
    `get(*values)` is `build(*values)[:1]`, evaluated, or None.

    Each marker stands for a value of its field's database type (a str for a text field,
    an int for an id) and must occur once among the compiled query's parameters; values
    of the same types take their places. A text value no database stores (a NUL, a lone
    surrogate: models.storable) matches no row: None, without a query (PostgreSQL would
    refuse it rather than find nothing)."""

    def __init__(self, build: Callable[..., QuerySet], *markers: Any) -> None:
        self._build = build
        self._markers = markers
        self._local = threading.local()  # a compiler belongs to its thread's connection

    def get(self, *values: Any) -> Model | None:
        if any(isinstance(value, str) and value != storable(value) for value in values):
            return None
        connection = connections[DEFAULT_DB_ALIAS]
        compiled = self._compiled(connection)
        params = list(compiled.params)
        for slot, value in zip(compiled.slots, values, strict=True):
            params[slot] = value
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            row = cursor.fetchone()
        return None if row is None else compiled.instance(row)

    def _compiled(self, connection: Any) -> _Compiled:
        cached = getattr(self._local, "compiled", None)
        if cached is None or cached.connection is not connection:
            cached = _Compiled(self._build(*self._markers)[:1], self._markers, connection)
            self._local.compiled = cached
        return cached


class _Compiled:
    def __init__(self, queryset: QuerySet, markers: tuple, connection: Any) -> None:
        if queryset.query.annotations or queryset.query.extra:
            raise ValueError("OneRow reads model rows only: no annotations or extra()")
        self.connection = connection
        self.compiler = queryset.query.get_compiler(connection=connection)
        self.sql, params = self.compiler.as_sql()  # also fills select and klass_info
        self.params = tuple(params)
        self.slots = []
        for marker in markers:
            found = [n for n, param in enumerate(self.params) if param == marker]
            if len(found) != 1:
                raise ValueError(f"the marker {marker!r} is not exactly one query parameter")
            self.slots.append(found[0])
        info = self.compiler.klass_info
        self.model = info["model"]
        fields = info["select_fields"]
        self.start, self.end = fields[0], fields[-1] + 1
        select = self.compiler.select
        self.names = [column[0].target.attname for column in select[self.start : self.end]]
        self.populators = get_related_populators(info, select, connection.alias)

    def instance(self, row: tuple) -> Model:
        row = next(iter(self.compiler.results_iter(results=[[row]])))  # the ORM's converters
        obj = self.model.from_db(self.connection.alias, self.names, row[self.start : self.end])
        for populator in self.populators:
            populator.populate(row, obj)
        return obj
