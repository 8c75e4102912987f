"""A user's own sitecustomize: the probe's must import it after installing itself."""

import builtins

builtins.USER_SITECUSTOMIZE = "loaded"  # type: ignore[attr-defined]
