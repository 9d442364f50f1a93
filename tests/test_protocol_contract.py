"""The protocol/ contract: the committed JSON Schema matches the code, PROTOCOL.md documents every message, and
every transcript in protocol/examples/ replays against a real `ltx-backend serve` subprocess on the tiny model.

Transcript format and matching rules: see protocol/PROTOCOL.md, "Example transcripts". In short:

- `{"host": ...}` is a line to send (an object is JSON-encoded; a string is sent verbatim), `{"expect": {...}}`
  a backend message matched as a subset, `{"file": PATH, "exists": BOOL}` a check on the file system and
  `{"comment": ...}` is ignored.
- Host lines are sent in runs: each run of consecutive `host` lines is written once every expectation before it
  has been met, so a transcript is deterministic even where the backend's worker and reader race.
- Expectations are met in order. While waiting for one, extra `progress` and `heartbeat` lines are skipped; any
  other line that does not match fails the transcript.
- Markers: `<tmp>` (inside any string) is the test's temporary directory; `<any>`, `<string>`, `<number>`,
  `<int>`, `<bool>`, `<list>`, `<object>` match a present value of that kind; `${name}` binds the value the first
  time it is met in an `expect` and must equal it afterwards (and is substituted into later `host` lines).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest

from ltx_backend.server import messages as m
from ltx_backend.server import schema

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = ROOT / "protocol"
EXAMPLES = sorted((PROTOCOL / "examples").glob("*.ndjson"))
EXAMPLE_TIMEOUT_S = 60.0  # per transcript, start to exit
EXIT_TIMEOUT_S = 5.0  # after stdin closes (the protocol promises 2 s; slack for loaded CI machines)
SKIPPABLE = {"progress", "heartbeat"}
TERMINAL = {"result", "error", "cancelled", "downloaded", "inspected"}
KINDS = {
    "<string>": lambda v: isinstance(v, str),
    "<number>": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "<int>": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "<bool>": lambda v: isinstance(v, bool),
    "<list>": lambda v: isinstance(v, list),
    "<object>": lambda v: isinstance(v, dict),
    "<any>": lambda v: True,
}
VARIABLE = re.compile(r"^\$\{(\w+)\}$")


# --- schema and docs ------------------------------------------------------------------------------------------


def test_committed_schema_matches_the_code() -> None:
    problems = schema.check(PROTOCOL / "schema")
    assert not problems, "\n".join(problems) + f"\nrun `{schema.COMMAND}` and commit the result"


def test_schema_check_command_flags_drift(tmp_path: Path) -> None:
    assert schema.main(["--out", str(tmp_path)]) == 0
    assert schema.main(["--out", str(tmp_path), "--check"]) == 0
    target = tmp_path / "backend-messages.schema.json"
    target.write_text(target.read_text().replace('"progress"', '"progres"'))
    assert schema.main(["--out", str(tmp_path), "--check"]) == 1


def _structs(union: object) -> list[type[msgspec.Struct]]:
    return list(union.__args__)  # type: ignore[attr-defined]


def test_protocol_md_documents_every_message_and_field() -> None:
    text = (PROTOCOL / "PROTOCOL.md").read_text(encoding="utf-8")
    host_part, backend_part = text.split("\n## Backend messages", 1)
    host_part = host_part.split("\n## Host messages", 1)[1]
    missing = []
    for part, union in ((host_part, m.HostMessage), (backend_part, m.BackendMessage)):
        for struct in _structs(union):
            tag = struct.__struct_config__.tag
            heading = f"### `{tag}`"
            if heading not in part:
                missing.append(heading)
                continue
            section = part.split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
            missing += [f"{tag}.{name}" for name in struct.__struct_fields__ if f"| `{name}` |" not in section]
    assert not missing, f"PROTOCOL.md lacks: {missing}"


def test_protocol_md_lists_every_error_code() -> None:
    from ltx_backend.errors import ErrorCode

    text = (PROTOCOL / "PROTOCOL.md").read_text(encoding="utf-8")
    assert not [code.value for code in ErrorCode if f"| `{code.value}` |" not in text]


# --- the matcher ----------------------------------------------------------------------------------------------


def _substitute(value: object, tmp: str, bound: dict[str, object]) -> object:
    """Replace `<tmp>` in strings and bound `${name}` variables (host lines and `file` paths)."""
    if isinstance(value, str):
        found = VARIABLE.match(value)
        if found:
            assert found[1] in bound, f"{value} is used before an `expect` bound it"
            return bound[found[1]]
        return value.replace("<tmp>", tmp)
    if isinstance(value, dict):
        return {key: _substitute(item, tmp, bound) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, tmp, bound) for item in value]
    return value


def _matches(expected: object, actual: object, tmp: str, bound: dict[str, object], binds: dict) -> bool:
    """Subset match; new variable bindings go to `binds` (committed by the caller only when the line matches)."""
    if isinstance(expected, str):
        found = VARIABLE.match(expected)
        if found:
            name = found[1]
            if name in bound:
                return actual == bound[name]
            if name in binds:
                return actual == binds[name]
            binds[name] = actual
            return True
        if expected in KINDS:
            return KINDS[expected](actual)
        return actual == expected.replace("<tmp>", tmp)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and _matches(value, actual[key], tmp, bound, binds) for key, value in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(expected)
            and all(_matches(e, a, tmp, bound, binds) for e, a in zip(expected, actual, strict=True))
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return expected is actual
    return expected == actual


def test_matcher_rules() -> None:
    bound: dict[str, object] = {}
    binds: dict[str, object] = {}
    line = {"type": "result", "id": "g", "job_id": "job-3", "seed": 7, "fps": 24.0, "warnings": [], "x": "/t/a"}
    assert _matches({"type": "result", "seed": "<int>", "fps": 24, "x": "<tmp>/a"}, line, "/t", bound, binds)
    assert _matches({"job_id": "${j}"}, line, "/t", bound, binds) and binds == {"j": "job-3"}
    bound.update(binds)
    assert not _matches({"job_id": "${j}"}, {"job_id": "job-4"}, "/t", bound, {})
    assert not _matches({"missing": "<any>"}, line, "/t", bound, {})
    assert not _matches({"seed": "<string>"}, line, "/t", bound, {})
    assert not _matches({"warnings": ["w"]}, line, "/t", bound, {})
    assert not _matches({"seed": True}, {"seed": 1}, "/t", bound, {})
    assert _substitute({"job_id": "${j}", "p": "<tmp>/x"}, "/t", bound) == {"job_id": "job-3", "p": "/t/x"}


# --- replay ---------------------------------------------------------------------------------------------------


class Backend:
    """`ltx-backend serve` as a subprocess, its stdout read by a thread into a queue of decoded lines."""

    def __init__(self, home: Path, log: Path, env: dict[str, str] | None = None) -> None:
        env = {**os.environ, "LTX_BACKEND_HOME": str(home), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.log = log
        self._stderr = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ltx_backend.cli.main", "serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=ROOT,
        )  # fmt: skip
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.seen: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.put(raw)
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def next(self, deadline: float) -> dict | None:
        """The next stdout line, decoded and checked against the protocol; None at EOF."""
        try:
            raw = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"timed out waiting for the backend{self.context()}")
        if raw is None:
            return None
        assert raw.endswith(b"\n"), f"unterminated stdout line {raw!r}"
        msgspec.json.decode(raw, type=m.BackendMessage)  # every stdout line is a valid protocol message
        message = json.loads(raw)
        self.seen.append(message)
        return message

    def close(self) -> int:
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            return self.process.wait(EXIT_TIMEOUT_S)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            self._stderr.close()

    def context(self) -> str:
        seen = "\n".join(json.dumps(line)[:300] for line in self.seen[-15:])
        stderr = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"\n--- last backend lines:\n{seen}\n--- stderr tail:\n{stderr}"


def _check_lifecycle(seen: list[dict]) -> None:
    """Invariants over a whole session: ready first; per job, progress fractions stay in 0..1 and never go down,
    nothing follows the one terminal message."""
    assert seen and seen[0]["type"] == "ready", "the first line must be `ready`"
    assert sum(line["type"] == "ready" for line in seen) == 1
    fractions: dict[str, float] = {}
    finished: set[str] = set()
    for line in seen:
        job = line.get("job_id")
        if line["type"] in ("progress", "heartbeat") and job is not None:
            assert job not in finished, f"{line} after the job's terminal message"
        if line["type"] == "progress":
            assert 0.0 <= line["fraction"] <= 1.0, line
            assert line["fraction"] >= fractions.get(job, 0.0), f"fraction went down: {line}"
            fractions[job] = line["fraction"]
        accepted = line["type"] in TERMINAL and job is not None and line.get("code") != "job_not_found"
        if accepted:
            assert job not in finished, f"a second terminal message for {job}: {line}"
            finished.add(job)


def _load(path: Path) -> list[dict]:
    steps = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        step = json.loads(text)
        assert isinstance(step, dict) and len({"host", "expect", "file", "comment"} & step.keys()) == 1, (
            f"{path.name}:{number}: each line is one of host / expect / file / comment"
        )
        step["line"] = number
        steps.append(step)
    return steps


def test_examples_exist() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"handshake", "errors", "generate", "cancel", "models", "download", "delete", "inspect"} <= names


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory: pytest.TempPathFactory):
    """The Hub the transcripts download from: the tiny model as `test/tiny` (see PROTOCOL.md)."""
    from fake_hub import FakeHub

    from ltx_backend.tiny import write_tiny_model

    with FakeHub() as hub:
        hub.add_folder("test/tiny", write_tiny_model(tmp_path_factory.mktemp("hub-source") / "tiny"))
        yield hub


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_transcript_replays(example: Path, tmp_path: Path, fake_hub) -> None:
    steps = _load(example)
    work = tmp_path / "work"
    work.mkdir()
    tmp = str(work)
    bound: dict[str, object] = {}
    env = {"HF_ENDPOINT": fake_hub.url, "HF_HUB_CACHE": str(tmp_path / "hub")}
    backend = Backend(tmp_path / "home", tmp_path / "stderr.log", env)
    deadline = time.monotonic() + EXAMPLE_TIMEOUT_S
    try:
        for step in steps:
            where = f"{example.name}:{step['line']}"
            if "host" in step:
                host = _substitute(step["host"], tmp, bound)
                backend.send(host if isinstance(host, str) else json.dumps(host, separators=(",", ":")))
            elif "file" in step:
                path = Path(str(_substitute(step["file"], tmp, bound)))
                assert path.exists() == step["exists"], f"{where}: {path} exists={path.exists()}"
            elif "expect" in step:
                while True:
                    message = backend.next(deadline)
                    assert message is not None, f"{where}: stdout closed before {step['expect']}{backend.context()}"
                    binds: dict[str, object] = {}
                    if _matches(step["expect"], message, tmp, bound, binds):
                        bound.update(binds)
                        break
                    assert message["type"] in SKIPPABLE, (
                        f"{where}: expected {step['expect']}\n got {message}{backend.context()}"
                    )
        code = backend.close()
        while (message := backend.next(time.monotonic() + EXIT_TIMEOUT_S)) is not None:
            assert message["type"] in SKIPPABLE, f"{example.name}: unexpected line after the transcript: {message}"
        assert code == 0, f"exit status {code}{backend.context()}"
        _check_lifecycle(backend.seen)
    finally:
        if backend.process.poll() is None:
            backend.process.kill()
            backend.process.wait()
