"""homelab's ASGI app with the stage timers of bench/profile_hooks.py (profile bench only)."""

from bench import profile_hooks
from homelab.asgi import application as homelab_application

profile_hooks.install()
application = profile_hooks.TimingASGI(homelab_application)
