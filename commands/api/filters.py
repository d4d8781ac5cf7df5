"""Query parameters of the list endpoints: the audit trail's filters and a bounded ?limit.

django-filter validates each parameter with a Django form field, so a bad value is a 400
`invalid` naming the parameter (never a 500 from the database), and drf-spectacular reads
the same FilterSet to document the parameters.
"""

import datetime

from django import forms
from django_filters import rest_framework as filters
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination

from commands.models import MAX_ID, Execution


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
    """?limit=&offset=, with ?limit capped: one request never reads the whole table.

    A value that is not a whole number in range is a 400 `invalid` naming the parameter
    (DRF ignores it and answers the first page, which the schema does not say); an empty
    one counts as absent, as django-filter treats the filters.
    """

    max_limit = 200
    limit_query_description = "Results per page, from 1 (default 50; more than 200 gives 200)."
    offset_query_description = "How many results to skip, from 0 (default 0)."

    def get_limit(self, request) -> int:
        value = request.query_params.get(self.limit_query_param, "")
        if value == "":
            return self.default_limit
        return min(whole_number(self.limit_query_param, value, minimum=1), self.max_limit)

    def get_offset(self, request) -> int:
        # Any size: past the count the page is empty, and no query is made with it.
        value = request.query_params.get(self.offset_query_param, "")
        return 0 if value == "" else whole_number(self.offset_query_param, value, minimum=0)

    def get_schema_operation_parameters(self, view) -> list[dict]:
        parameters = super().get_schema_operation_parameters(view)
        minimum = {self.limit_query_param: 1, self.offset_query_param: 0}
        for parameter in parameters:
            parameter["schema"]["minimum"] = minimum[parameter["name"]]
        return parameters


def whole_number(name: str, value: str, *, minimum: int) -> int:
    """value as a whole number of at least minimum, in ASCII digits (int() would also take
    " 7", "1_0" or an Arabic-Indic 7); ValidationError naming the parameter otherwise."""
    if value.isascii() and value.isdecimal() and int(value) >= minimum:
        return int(value)
    raise ValidationError({name: [f"Give a whole number of at least {minimum}."]})
