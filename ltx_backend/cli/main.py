"""`ltx-backend` commands. Errors print their code, message and hint, and exit non-zero."""

from __future__ import annotations

import json
import sys
from collections import Counter

import click

from ltx_backend import __version__
from ltx_backend.errors import LtxError


def _fail(error: LtxError) -> None:
    click.echo(f"error [{error.code.value}]: {error.message}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)
    sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="ltx-backend")
def cli() -> None:
    """Generate video with synchronized audio from text with LTX-2 / LTX-2.3 on MLX."""


@cli.command("validate-env")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_env(as_json: bool) -> None:
    """Check Python, MLX and its device, ffmpeg, memory, disk and package versions."""
    from ltx_backend.env import validate_environment

    report = validate_environment()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(f"ltx-backend {report.backend_version} | Python {report.python} | {report.platform}")
        for check in report.checks:
            mark = click.style("ok ", fg="green") if check.ok else click.style("FIX", fg="red")
            click.echo(f"  {mark} {check.name:<16} {check.detail}")
            if not check.ok and check.fix:
                click.echo(f"      -> {check.fix}")
        click.echo("ready to generate" if report.ok else "not ready: fix the items marked FIX")
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect(model: str, as_json: bool) -> None:
    """Show a checkpoint's layout, components and configs (MODEL: directory, file or cached repo id)."""
    from ltx_backend.weights.checkpoint import open_checkpoint
    from ltx_backend.weights.resolve import resolve_model

    try:
        ckpt = open_checkpoint(resolve_model(model))
    except LtxError as error:
        _fail(error)
    summary = {
        "path": str(ckpt.root),
        "layout": ckpt.layout.value,
        "model_version": ckpt.model_info.get("model_version") or ckpt.split_manifest.get("model_version"),
        "quantization": ckpt.quantization,
        "config_sections": sorted(ckpt.config),
        "components": {},
    }
    for name in ckpt.components:
        component = ckpt.component(name)
        dtypes = Counter(info.dtype for info in component.tensors.values())
        summary["components"][name] = {"tensors": len(component.tensors), "dtypes": dict(dtypes)}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['path']}\n  layout: {summary['layout']}  version: {summary['model_version'] or '?'}")
    if ckpt.quantization:
        click.echo(f"  quantized: {ckpt.quantization['bits']}-bit, group {ckpt.quantization['group_size']}")
    click.echo(f"  config sections: {', '.join(summary['config_sections']) or 'none (LTX-2.0 defaults)'}")
    for name, info in summary["components"].items():
        dtypes = ", ".join(f"{k} x{v}" for k, v in info["dtypes"].items())
        click.echo(f"  {name:<28} {info['tensors']:>6} tensors  ({dtypes})")


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
