"""Change the tags of an existing server: add, remove, or set them all."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from commands.models import Server, Tag


class Command(BaseCommand):
    help = (
        "Change a server's tags, e.g. tagserver nas --add pi --remove web; --set replaces "
        "them all (--set alone clears them). Tags are slugs: lowercase letters, digits, - "
        "and _, up to 32, e.g. pi, web, rack-2. A batch may target a tag (POST "
        '/api/v1/batches/ with "tag", ./manage.py runbatch --tag).'
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="The server's name.")
        parser.add_argument("--add", action="append", default=[], metavar="TAG")
        parser.add_argument("--remove", action="append", default=[], metavar="TAG")
        parser.add_argument(
            "--set", nargs="*", default=None, metavar="TAG", help="Exactly these tags."
        )

    def handle(self, *args, name: str, add: list, remove: list, set: list | None, **options):
        server = Server.objects.filter(name=name).first()
        if server is None:
            known = ", ".join(Server.objects.values_list("name", flat=True)[:20]) or "none yet"
            raise CommandError(f"No server named {name!r} (servers: {known}).")
        if set is not None and (add or remove):
            raise CommandError("--set replaces every tag: give it alone, or --add/--remove.")
        if set is None and not (add or remove):
            raise CommandError("Say what to change: --add TAG, --remove TAG or --set TAG ...")
        before = sorted(server.tags.values_list("name", flat=True))
        wanted = (
            sorted(dict.fromkeys(set))
            if set is not None
            else sorted((dict.fromkeys(before) | dict.fromkeys(add)).keys() - {*remove})
        )
        with transaction.atomic():
            server.tags.set(tags_named(wanted))
        self.stdout.write(
            f"Tags of {server.name}: {', '.join(before) or '(none)'} -> "
            f"{', '.join(wanted) or '(none)'}"
        )


def tags_named(names: list[str]) -> list[Tag]:
    """The Tag rows for names, created as needed; CommandError naming a bad one."""
    tags = []
    for name in names:
        tag = Tag.objects.filter(name=name).first() or Tag(name=name)
        if tag.pk is None:
            try:
                tag.save()
            except ValidationError as exc:
                raise CommandError(f"--tag {name!r}: {' '.join(exc.messages)}") from None
        tags.append(tag)
    return tags
