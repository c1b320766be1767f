"""``python -m serve``: load the model (failing in one line when it cannot), then run uvicorn.

Every flag has a ``DETRDISTILL_<NAME>`` environment variable (flags win). Scale out with several replicas
behind a load balancer, or export a Triton repository (``python -m compress export-triton``).
"""

from __future__ import annotations

import argparse
import logging
import sys

from compress.errors import DetrDistillError
from serve.settings import Settings


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if name == "cors_origins":
            parser.add_argument(flag, nargs="*", default=None, help=info.description)
        else:
            parser.add_argument(flag, default=None, help=f"{info.description or ''} (default {info.default})")
    given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not None}
    return Settings(**given)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = parse_args(argv)
    except ValueError as err:  # pydantic's ValidationError: one line per bad setting
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    import uvicorn

    from compress.runtime import load_runner
    from serve.app import create_app

    try:
        runner = load_runner(settings.model_path, settings.backend, settings.threads)
    except DetrDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings, runner), host=settings.host, port=settings.port, log_level="info",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
