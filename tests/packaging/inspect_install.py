"""Where the fresh shop's tiktok_tracking comes from, and whether every module of it imports.

Copied into the shop's folder and run there with its virtualenv's python; prints one JSON object.
"""

import importlib
import json
import os
import pkgutil
import traceback

import django


def inspect_install():
    import tiktok_tracking

    modules = {}
    # A package that fails to import is reported by the loop below, not by the walk.
    walk = pkgutil.walk_packages(tiktok_tracking.__path__, "tiktok_tracking.", lambda name: None)
    for info in walk:
        try:
            importlib.import_module(info.name)
        except Exception:
            modules[info.name] = traceback.format_exc(limit=3)
        else:
            modules[info.name] = None
    return {
        "file": tiktok_tracking.__file__,
        "version": tiktok_tracking.__version__,
        "django": django.get_version(),
        "modules": sorted(modules),
        "failures": {name: error for name, error in modules.items() if error},
    }


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    django.setup()
    print(json.dumps(inspect_install()))
