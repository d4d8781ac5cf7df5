"""homelab's settings plus the timing middleware, first (bench/profile_http.py only).

A candidate change is switched on per worker by an environment variable, so it can be
measured beside the shipped settings in one run:

  HOMELAB_BENCH_MIDDLEWARE=api   only the middleware an API-key request needs (the admin
                                 would break: measured, not shipped)
"""

import os

from homelab.settings import *  # noqa: F403
from homelab.settings import MIDDLEWARE

if os.environ.get("HOMELAB_BENCH_MIDDLEWARE") == "api":
    MIDDLEWARE = [
        "corsheaders.middleware.CorsMiddleware",
        "commands.api.handlers.RefuseNulMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.common.CommonMiddleware",
    ]

MIDDLEWARE = ["bench.profile_hooks.TimingMiddleware", *MIDDLEWARE]
