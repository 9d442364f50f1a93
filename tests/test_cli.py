"""The `ltx-backend` command line (through click's runner, and once as a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from ltx_backend.cli.main import cli

FIXTURES = Path(__file__).parent / "fixtures" / "audio"


def test_validate_env_reports_every_check_as_json() -> None:
    result = CliRunner().invoke(cli, ["validate-env", "--json"])
    report = json.loads(result.output)
    names = {check["name"] for check in report["checks"]}
    assert {"python", "mlx-runtime", "ffmpeg", "memory", "disk", "numpy", "msgspec"} <= names
    assert "cpu" in report["device"] or "gpu" in report["device"]
    failed = [check for check in report["checks"] if not check["ok"] and check["name"] != "disk"]
    assert result.exit_code == (1 if failed else 0)
    assert all(check["fix"] and check["code"] for check in failed)


def test_inspect_summarises_a_checkpoint_and_checks_it_would_load(tmp_path: Path) -> None:
    from ltx_backend.tiny import write_tiny_model

    result = CliRunner().invoke(cli, ["inspect", str(write_tiny_model(tmp_path / "t23", "2.3")), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["layout"], report["model_version"], report["ok"]) == ("split", "2.3", True)
    components = {c["name"]: c for c in report["components"]}
    assert components["transformer"]["quantization"]["bits"] == 4 and components["transformer"]["dtypes"]["U32"]
    assert all(c["ok"] for c in components.values()) and "text_encoder" in components

    # The audio fixture holds only the audio components: a job could not load it.
    result = CliRunner().invoke(cli, ["inspect", str(FIXTURES / "ltx23_split"), "--json"])
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    components = {c["name"]: c for c in report["components"]}
    assert components["vocoder"]["ok"] and components["vocoder"]["tensors"] > 100
    assert components["transformer"]["error"]["code"] == "weights_missing_key" and not report["ok"]


def test_errors_print_code_and_hint_and_exit_nonzero(tmp_path: Path) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "ltx_backend.cli.main", "inspect", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1
    assert "error [layout_unknown]" in process.stderr and "hint:" in process.stderr
