from rest_framework.routers import DefaultRouter

from commands import views

router = DefaultRouter(trailing_slash="/?")
router.register("servers", views.ServerViewSet, basename="server")

urlpatterns = router.urls
