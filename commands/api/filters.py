"""Query parameters of the list endpoints: the audit trail's filters and a bounded ?limit.

django-filter validates each parameter with a Django form field, so a bad value is a 400
`invalid` naming the parameter (never a 500 from the database), and drf-spectacular reads
the same FilterSet to document the parameters.
"""

import datetime
import re

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator, RegexValidator
from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError as DRFValidationError
from rest_framework.pagination import LimitOffsetPagination

from commands.models import MAX_ID, TAG_MESSAGE, TAG_PATTERN, Batch, Execution, Server, parse_id

# What an id or a server name can look like: up to 64 letters, digits, - and _, not only
# zeros (a name is a slug, never all digits; an id is all digits, from 1). The schema's
# pattern (ECMA) and the check (Python: \Z, as $ would let a final newline by) say the
# same; the largest id is checked apart (validate_id_range), as no pattern says it simply.
SERVER_REF_PATTERN = "^[-a-zA-Z0-9_]*[-a-zA-Z1-9_][-a-zA-Z0-9_]*$"
SERVER_REF = RegexValidator(
    r"\A[-a-zA-Z0-9_]*[-a-zA-Z1-9_][-a-zA-Z0-9_]*\Z",
    "Name a server by its id or its name (letters, digits, - and _), e.g. nas.",
    code="invalid",
)


def validate_id_range(value: str) -> None:
    """All digits is an id, which is 1 to MAX_ID: 0 or a larger number names no server
    ever, so it is a mistake to say so, not an empty list."""
    if value.isascii() and value.isdecimal() and parse_id(value) is None:
        raise ValidationError(f"A server id is a whole number from 1 to {MAX_ID}.", code="invalid")


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


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": SERVER_REF_PATTERN,
        "description": "Only this server's rows: its id or its name, as in URLs (e.g. 3 "
        f"or nas). All digits is an id, from 1 to {MAX_ID}; anything else a name. A name "
        "or id no server has gives no rows; 0, a larger number or any other value is a "
        "400 `invalid`.",
    }
)
class ServerRefFilter(filters.CharFilter):
    """A server by id or name, as every URL names one (services.find_server): all ASCII
    digits is its id, anything else its name."""

    def __init__(self, *args, **kwargs) -> None:
        # Not stripped: " nas" is refused as the schema's pattern refuses it.
        validators = [SERVER_REF, MaxLengthValidator(64), validate_id_range]
        super().__init__(*args, validators=validators, strip=False, **kwargs)

    def filter(self, qs: QuerySet, value: str) -> QuerySet:
        if value in ("", None):
            return qs
        if value.isdecimal():
            return qs.filter(**{f"{self.field_name}_id": parse_id(value)})
        return qs.filter(**{f"{self.field_name}__name": value})


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


class IdFilter(filters.NumberFilter):
    """A row id: a whole number from 1 to MAX_ID."""

    field_class = forms.IntegerField


class ExecutionFilter(filters.FilterSet):
    """GET executions/?server=&action_type=&status=&since=&batch=."""

    server = ServerRefFilter(field_name="server")
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
    " 7", "1_0" or an Arabic-Indic 7); a 400 `invalid` naming the parameter otherwise."""
    if value.isascii() and value.isdecimal() and int(value) >= minimum:
        return int(value)
    raise DRFValidationError({name: [f"Give a whole number of at least {minimum}."]})
