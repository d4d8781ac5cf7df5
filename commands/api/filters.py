"""Query parameters of the list endpoints: the audit trail's filters and a bounded ?limit.

django-filter validates each parameter with a Django form field, so a bad value is a 400
`invalid` naming the parameter (never a 500 from the database), and drf-spectacular reads
the same FilterSet to document the parameters.
"""

import datetime

from django import forms
from django_filters import rest_framework as filters
from rest_framework.pagination import LimitOffsetPagination

from commands.models import Execution

# The largest id either database stores (a signed 64-bit integer): a bigger number would
# overflow inside SQLite or PostgreSQL, and no row can have it anyway.
MAX_ID = 2**63 - 1


class IdFilter(filters.NumberFilter):
    """A row id: a whole number from 1 to MAX_ID."""

    field_class = forms.IntegerField


class UtcDateTimeFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 date and time, compared in UTC. Python takes offsets up to ±23:59,
    PostgreSQL only up to about ±16 h: `-18:11` answered 500 there (found by the fuzzer)."""

    def filter(self, qs, value):
        if value is not None:
            try:
                value = value.astimezone(datetime.UTC)
            except OverflowError:  # past year 1 or 9999 once in UTC: the nearest end
                end = datetime.datetime.min if value.year == 1 else datetime.datetime.max
                value = end.replace(tzinfo=datetime.UTC)
        return super().filter(qs, value)


class ExecutionFilter(filters.FilterSet):
    """GET executions/?server=&action_type=&status=&since=."""

    server = IdFilter(
        field_name="server",
        min_value=1,
        max_value=MAX_ID,
        help_text="Only this server's id.",
    )
    action_type = filters.CharFilter(help_text="Only this action type.")
    status = filters.ChoiceFilter(choices=Execution.Status.choices, help_text="Only this status.")
    since = UtcDateTimeFilter(
        field_name="created_at",
        lookup_expr="gte",
        help_text="ISO 8601, e.g. 2024-05-01T12:00:00Z (UTC when no offset); only rows "
        "created at or after it.",
    )

    class Meta:
        model = Execution
        fields = ["server", "action_type", "status", "since"]


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """?limit=&offset=, with ?limit capped: one request never reads the whole table."""

    max_limit = 200
