"""Ranks 1..N-1: ``python -m ltx_backend.parallel.follower`` (started by ``launch.Followers``, never by hand).

Reads JSON lines from stdin: first ``{"engine": {...}, "mode": ...}``, then one ``{"request": {...}}`` per job;
answers each with one line on stdout (``{"ok": true}``, ``{"cancelled": true}`` or ``{"error": {...}}``). Logs go to
stderr. After an error it exits, so that rank 0's next collective fails at once instead of waiting; EOF on stdin
ends it.
"""

from __future__ import annotations

import json
import logging
import sys

from ltx_backend.errors import LtxError
from ltx_backend.parallel.launch import init_group
from ltx_backend.parallel.run import RankRole, engine_options_from_json, request_from_json
from ltx_backend.pipeline.engine import Cancelled, Engine


def _reply(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _error(error: BaseException) -> dict:
    if isinstance(error, LtxError):
        return {"error": error.to_dict()}
    return {"error": {"code": "internal", "message": f"{type(error).__name__}: {error}"}}


def main() -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    group = init_group()
    engine = None
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if "engine" in message:
                options = engine_options_from_json(message["engine"])
                engine = Engine(**options, parallel=RankRole(group, message["mode"]))
            else:
                engine.generate(request_from_json(message["request"]))
            _reply({"ok": True})
        except Cancelled:
            _reply({"cancelled": True})
        except BaseException as error:
            logging.getLogger(__name__).exception("rank %d failed", group.rank())
            _reply(_error(error))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
