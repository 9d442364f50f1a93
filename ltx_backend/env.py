"""Environment validation: can this Python generate, and what should be fixed first?

`validate_environment()` returns a report of checks; each failed check carries a stable code, a
message and a fix (often an exact command). The CLI prints it, the stdio server sends it.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from ltx_backend import __version__
from ltx_backend.weights.resolve import hub_cache_dir

MIN_PYTHON = (3, 10)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    code: str = ""  # stable problem code when not ok


@dataclass
class EnvReport:
    ok: bool
    backend_version: str
    python: str
    platform: str
    device: str
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _pip(*requirements: str) -> str:
    quoted = " ".join(f"'{req}'" for req in requirements)
    return f"{sys.executable} -m pip install -U {quoted}"


def _declared_requirements() -> list[Requirement]:
    try:
        raw = metadata.requires("ltx-backend") or []
    except metadata.PackageNotFoundError:
        return []
    requirements = [Requirement(text) for text in raw]
    return [req for req in requirements if req.marker is None or req.marker.evaluate({"extra": ""})]


def check_packages() -> list[Check]:
    checks = []
    for req in _declared_requirements():
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            checks.append(Check(req.name, False, "not installed", _pip(str(req)), "package_missing"))
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            checks.append(
                Check(
                    req.name, False, f"{installed} installed, {req.specifier} required", _pip(str(req)), "package_old"
                )
            )
        else:
            checks.append(Check(req.name, True, installed))
    return checks


def check_mlx() -> tuple[Check, str]:
    """Import MLX and run one tiny op on its default device."""
    try:
        import mlx.core as mx

        value = (mx.array([1.0, 2.0]) * 2).sum()
        mx.eval(value)
        device = str(mx.default_device())
    except Exception as exc:  # a missing backend library raises ImportError or RuntimeError
        hint = _pip("mlx[cpu]") if sys.platform == "linux" else _pip("mlx")
        return Check("mlx-runtime", False, f"MLX does not run: {exc}", hint, "mlx_unusable"), "none"
    gpu = "gpu" in device
    detail = f"mlx {mx.__version__} on {device}"
    if sys.platform == "linux" and not gpu:
        detail += " (CPU only: slow for real models; install the CUDA backend on NVIDIA machines)"
    return Check("mlx-runtime", True, detail), device


def check_ffmpeg() -> Check:
    """The ffmpeg a job would use (IMAGEIO_FFMPEG_EXE or imageio-ffmpeg's), found and run once (``-version``)."""
    import subprocess

    from ltx_backend.errors import LtxError
    from ltx_backend.media.video import ffmpeg_exe

    try:
        exe = ffmpeg_exe()
    except LtxError as error:
        return Check("ffmpeg", False, error.message, error.hint or _pip("imageio-ffmpeg"), "ffmpeg_missing")
    try:
        process = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("ffmpeg", False, f"{exe} does not run: {exc}", _ffmpeg_fix(), "ffmpeg_missing")
    if process.returncode != 0:
        return Check("ffmpeg", False, f"{exe} -version exited with {process.returncode}", _ffmpeg_fix(),
                     "ffmpeg_missing")  # fmt: skip
    return Check("ffmpeg", True, exe)


def _ffmpeg_fix() -> str:
    if os.environ.get("IMAGEIO_FFMPEG_EXE"):
        return "Unset IMAGEIO_FFMPEG_EXE or point it at a working ffmpeg binary."
    return _pip("imageio-ffmpeg")


def check_memory() -> Check:
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return Check("memory", True, "unknown")
    return Check("memory", True, f"{total / 2**30:.1f} GiB total")


def check_disk() -> Check:
    cache = hub_cache_dir()
    probe = next((p for p in [cache, *cache.parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(probe).free
    detail = f"{free / 2**30:.1f} GiB free for the model cache at {cache}"
    if free < 25 * 2**30:
        return Check("disk", False, detail, "Free disk space or point HF_HOME at a larger disk.", "disk_low")
    return Check("disk", True, detail)


def validate_environment() -> EnvReport:
    python_ok = sys.version_info[:2] >= MIN_PYTHON
    python = Check(
        "python",
        python_ok,
        f"{platform.python_version()} at {sys.executable}",
        "" if python_ok else f"Use Python {'.'.join(map(str, MIN_PYTHON))} or newer.",
        "" if python_ok else "python_old",
    )
    mlx_check, device = check_mlx()
    checks = [python, mlx_check, check_ffmpeg(), check_memory(), check_disk(), *check_packages()]
    return EnvReport(
        ok=all(check.ok for check in checks if check.name != "disk"),
        backend_version=__version__,
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.machine()}",
        device=device,
        checks=checks,
    )
