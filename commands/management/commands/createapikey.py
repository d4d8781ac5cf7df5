"""Create an API key; the key itself is printed once, alone on the last line."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from commands.models import ApiKey


class Command(BaseCommand):
    help = "Create an API key. The key is shown once (last line of output) and stored hashed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name for the key (who or what uses it).")
        parser.add_argument("--user", help="Username of the key's owner (optional).")

    def handle(self, *args, name: str, user: str | None, **options) -> None:
        owner = None
        if user:
            try:
                owner = get_user_model().objects.get(username=user)
            except get_user_model().DoesNotExist:
                raise CommandError(f"No user named {user!r}; create it first.") from None
        if not name.strip() or len(name) > 50:
            raise CommandError("The key name must be 1 to 50 characters.")
        api_key, key = ApiKey.objects.create_key(name=name, owner=owner)
        self.stderr.write(
            f"Created API key {api_key.name!r} (prefix {api_key.prefix}). "
            "Store it now: it cannot be shown again."
        )
        self.stdout.write(key)
