"""Who may look at what in the admin (who may act is commands/scopes.may_execute)."""

from commands.scopes import may_read


class StaffMayRead:
    """ModelAdmin mixin: any staff login may look (read-only) at what the API lets it read,
    without the model's view permission; adding, changing and deleting keep theirs."""

    def has_view_permission(self, request, obj=None) -> bool:
        return may_read(request.user) or super().has_view_permission(request, obj)

    def has_module_permission(self, request) -> bool:
        return may_read(request.user) or super().has_module_permission(request)
