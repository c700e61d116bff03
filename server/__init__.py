"""The InferenceGym OpenEnv server. It needs the ``server`` extra (``pip install 'inferencegym[server]'``):
``pip install inferencegym`` alone is the simulator, the PPO trainer and the CLI, without a web stack.

This module imports nothing beyond the standard library, so the ``server`` command can say what is
missing instead of failing inside an import.
"""

from __future__ import annotations

import importlib.util
import sys

# the modules the server imports, and the distribution that brings each
REQUIRED = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "openenv": "openenv",
    "httpx": "httpx",
    "yaml": "pyyaml",
    "websockets": "websockets",
}
INSTALL_HINT = "pip install 'inferencegym[server]'  (or `make serve`, which installs it)"


def _found(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing() -> list[str]:
    """The distributions of :data:`REQUIRED` whose modules cannot be found."""
    return [dist for mod, dist in REQUIRED.items() if not _found(mod)]


def missing_message(names: list[str]) -> str:
    return f"the InferenceGym server needs the `server` extra ({', '.join(names)} not installed): {INSTALL_HINT}"


def main(argv: list[str] | None = None) -> int:
    """The ``server`` command: ``python -m server.app``'s flags; exit 2 with one line if the extra is missing."""
    names = missing()
    if names:
        print(f"server: {missing_message(names)}", file=sys.stderr)
        return 2
    from server.app import cli

    return cli(argv)
