"""Who may use the API: holders of a valid API key, or logged-in staff."""

from rest_framework.permissions import BasePermission

from commands.models import ApiKey


class IsApiKeyOrStaff(BasePermission):
    """Allows requests carrying a valid API key, or from an authenticated staff user."""

    message = "An API key or a staff login is required."

    def has_permission(self, request, view) -> bool:
        if isinstance(request.auth, ApiKey):
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)
