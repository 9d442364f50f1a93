"""The `validate-env` reply: the environment checks plus what a host needs to offer a fix, cached 5 minutes."""

from __future__ import annotations

import time
from pathlib import Path

from ltx_backend import __version__
from ltx_backend.server import messages as m

CACHE_SECONDS = 300
# Problems a host should fix first: nothing runs without these.
PRIORITY = ("python_old", "mlx_unusable", "package_missing", "package_old", "ffmpeg_missing", "disk_low")


def _install_location() -> tuple[str, bool]:
    """Where this ltx-backend runs from, and whether it is an editable checkout (a source tree with pyproject)."""
    import ltx_backend

    package = Path(ltx_backend.__file__).resolve().parent
    return str(package), (package.parent / "pyproject.toml").is_file()


def _cached(model: str | None) -> bool | None:
    from ltx_backend.weights.resolve import TINY_MODELS, find_local

    if model is None:
        return None
    if model in TINY_MODELS:
        return True  # the tiny models need no download (nor writing now)
    try:
        return find_local(model) is not None
    except (OSError, ValueError):  # a name the OS refuses as a path (too long, a NUL byte) is not cached
        return False


class EnvironmentCache:
    def __init__(self) -> None:
        self._report: m.EnvReport | None = None

    def report(self, request: m.ValidateEnv) -> m.EnvReport:
        from ltx_backend.env import validate_environment

        if request.fresh or self._report is None or time.time() - self._report.cached_at > CACHE_SECONDS:
            env = validate_environment()
            checks = [m.EnvCheck(c.name, c.ok, c.detail, c.fix, c.code) for c in env.checks]
            problems = sorted((c for c in checks if not c.ok), key=lambda c: _rank(c.code))
            path, editable = _install_location()
            self._report = m.EnvReport(
                None, env.ok, problems, checks, env.python, env.device, __version__, path, editable,
                cached_at=time.time(),
            )  # fmt: skip
        model_cached = _cached(request.model)
        encoder_cached = _cached(request.text_encoder)
        ok = self._report.ok and model_cached is not False and encoder_cached is not False
        problems = list(self._report.problems)  # every `ok: false` names its problem: never `problems: []`
        for name, cached in ((request.model, model_cached), (request.text_encoder, encoder_cached)):
            if cached is False:
                problems.append(m.EnvCheck("model", False, f"{name} is not downloaded", f"ltx-backend download {name}",
                                           "model_not_cached"))  # fmt: skip
        return m.EnvReport(**{**_fields(self._report), "id": request.id, "ok": ok, "problems": problems,
                              "model_cached": model_cached, "text_encoder_cached": encoder_cached})  # fmt: skip


def _rank(code: str) -> int:
    return PRIORITY.index(code) if code in PRIORITY else len(PRIORITY)


def _fields(report: m.EnvReport) -> dict:
    import msgspec

    return msgspec.structs.asdict(report)
