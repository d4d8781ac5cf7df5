from rest_framework.routers import DefaultRouter

from commands.api import batches, views


class OptionalSlashRouter(DefaultRouter):
    """Routes match with or without the trailing slash (`.../commands/execute` as documented)."""

    def __init__(self) -> None:
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("servers", views.ServerViewSet, basename="server")
router.register("executions", views.ExecutionViewSet, basename="execution")
router.register("batches", batches.BatchViewSet, basename="batch")

urlpatterns = router.urls
