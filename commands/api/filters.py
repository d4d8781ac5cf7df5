"""Query parameters of the list endpoints: the audit trail's filters and a bounded ?limit.

django-filter validates each parameter with a Django form field, so a bad value is a 400
`invalid` naming the parameter (never a 500 from the database), and drf-spectacular reads
the same FilterSet to document the parameters.
"""

import datetime
import re

from django import forms
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field
from rest_framework.pagination import LimitOffsetPagination

from commands.models import TAG_MESSAGE, TAG_PATTERN, Batch, Execution, Server

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


class TagsField(forms.Field):
    """Each `tag` of the query (?tag=pi&tag=web), each a tag slug."""

    widget = forms.SelectMultiple
    pattern = re.compile(TAG_PATTERN)

    def to_python(self, value) -> list[str]:
        return [str(item) for item in value or []]

    def validate(self, value: list[str]) -> None:
        for tag in value:
            if not self.pattern.fullmatch(tag):
                raise forms.ValidationError(f"{tag!r}: {TAG_MESSAGE}")


@extend_schema_field({"type": "array", "items": {"type": "string", "pattern": TAG_PATTERN}})
class TagsFilter(filters.Filter):
    """Only servers with every tag given (repeat `tag` for "has all of them")."""

    field_class = TagsField

    def filter(self, qs, value):
        for tag in value or []:
            qs = qs.filter(tags__name=tag)
        return qs.distinct() if value else qs


class ServerFilter(filters.FilterSet):
    """GET servers/?name=&tag=&tag=."""

    name = filters.CharFilter(help_text="Only the server with this name.")
    tag = TagsFilter(help_text="Only servers with this tag; repeat it for servers with all.")

    class Meta:
        model = Server
        fields = ["name", "tag"]


class BatchFilter(filters.FilterSet):
    """GET batches/?status=."""

    status = filters.ChoiceFilter(choices=Batch.Status.choices, help_text="Only this status.")

    class Meta:
        model = Batch
        fields = ["status"]


class ExecutionFilter(filters.FilterSet):
    """GET executions/?server=&action_type=&status=&since=&batch=."""

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
    batch = IdFilter(
        field_name="batch",
        min_value=1,
        max_value=MAX_ID,
        help_text="Only the targets of this batch (its id).",
    )

    class Meta:
        model = Execution
        fields = ["server", "action_type", "status", "since", "batch"]


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """?limit=&offset=, with ?limit capped: one request never reads the whole table."""

    max_limit = 200
