"""Seeded protocol fuzzing: no line ends the server, every line gets exactly one reply, stdout stays protocol JSON.

Three layers, fastest first: `handle_line` in process (thousands of lines: mutated valid messages, garbage,
non-objects, deep nesting, bad UTF-8), `serve` in process over a real pipe (framing: oversized lines, CRLF, blank
lines, lines split across writes, a last line without a newline), and one real `ltx-backend serve` subprocess.
"""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
from server_harness import Host, Sink, run

from ltx_backend.server import messages as m
from ltx_backend.server.lines import MAX_DEPTH, MAX_LINE_BYTES
from ltx_backend.server.server import Server

SEED = 20261205
IMMEDIATE = ("status", "cancel", "validate-env")  # answered by the reader alone: safe to send with a worker running
VALID = [
    {"type": "status", "id": "s"},
    {"type": "cancel", "id": "c", "job_id": "job-1"},
    {"type": "cancel", "id": "c"},
    {"type": "validate-env", "id": "v", "model": "tiny", "text_encoder": None},
    {"type": "load", "id": "l", "model": "tiny", "text_encoder": None, "quantize": 8},
    {"type": "unload", "id": "u"},
    {"type": "generate", "id": "g", "prompt": "a fox", "output_path": "/tmp/ltx-fuzz/a.mp4", "width": 128,
     "height": 128, "num_frames": 9, "fps": 24.0, "seed": 1, "steps": None, "cfg_scale": None, "audio": True,
     "keyframes": [{"path": "/tmp/ltx-fuzz/k.png", "frame_idx": 0, "strength": 1.0}], "tiling": "auto",
     "audio_output_path": None, "negative_prompt": None, "enhance_prompt": False, "round_dimensions": False},
]  # fmt: skip
VALUES = [
    None, True, False, 0, 1, -1, 4, 8, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40, 0.5, -0.0, 1e308,
    -1e308, 5e-324, "", " ", "x", "tiny", "TINY", "/", ".", "..", "\x00", "a\nb", "caf\u00e9", "\U0001f98a", "\u202e",
    "job-1", "job-999999999999", "a" * 5000, "/tmp/ltx-fuzz/" + "n" * 300 + ".mp4", [], {}, [1, 2], {"a": 1},
    [{"path": 1}], [{}], ["x"], {"type": "status"}, "status", "load", "generate", "shutdown",
]  # fmt: skip
RAW = [  # lines no JSON encoder writes
    b"", b"   ", b"\t", b"{", b"}", b"[", b"{}", b"[]", b"null", b"true", b"0", b"-0", b"1e999", b'"str"', b"[1,2]",
    b"NaN", b"Infinity", b"{'type': 'status'}", b'{"type":"status",}', b'{"type":"status"} {"type":"status"}',
    b'{"type":"status"}garbage', b'{"type":"status","id":"\\ud800"}', b'{"type":"status","id":"\\u0000"}',
    b'{"type":"status","type":"load"}', b'{"id":"dup","id":"dup2","type":"status"}', b'{"type":"status"\x00}',
    b"\xef\xbb\xbf{\"type\":\"status\"}", b"\xff\xfe{\x00}\x00", b'{"type":"status","id":"\xc0\x80"}',
    b'{"type":"status","id":"\xed\xa0\x80"}', b'{"type":"status","id":"\xf4\x90\x80\x80"}', b"\x80", b"\xe2\x82",
    b'{"type":"generate","width":1' + b"0" * 5000 + b"}", b'{"type":"generate","fps":1' + b"0" * 400 + b".0}",
]  # fmt: skip


def _value(rng: random.Random, depth: int = 0) -> object:
    pick = rng.random()
    if pick < 0.8 or depth > 2:
        return rng.choice(VALUES)
    if pick < 0.9:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["type", "id", "path", "x"]): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def _mutated(rng: random.Random, message: dict) -> dict:
    message = json.loads(json.dumps(message))
    for _ in range(rng.randint(1, 4)):
        key = rng.choice([*message, "type", "id", "extra", "keyframes"])
        action = rng.random()
        if action < 0.6:
            message[key] = _value(rng)
        elif action < 0.75:
            message.pop(key, None)
        elif action < 0.85 and _first_keyframe(message) is not None:
            message["keyframes"][0][rng.choice(["path", "frame_idx", "strength"])] = _value(rng)
        else:
            message[key] = rng.choice(VALID)["type"]
    if message.get("type") == "validate-env" and message.get("fresh") is not False:
        message["fresh"] = False  # a fresh report runs every environment check: keep the test's time bounded
    return message


def _first_keyframe(message: dict) -> dict | None:
    keyframes = message.get("keyframes")
    return keyframes[0] if isinstance(keyframes, list) and keyframes and isinstance(keyframes[0], dict) else None


def _nested(rng: random.Random) -> bytes:
    depth = rng.choice([MAX_DEPTH, MAX_DEPTH + 1, 200, 1000, 5000, 100_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    inner = opener * depth + b"1" + closer * depth
    return rng.choice([inner, b'{"type":"status","id":"deep","x":' + inner + b"}"])


def _bad_utf8(rng: random.Random) -> bytes:
    line = bytearray(json.dumps(rng.choice(VALID)).encode())
    position = rng.randrange(len(line))
    line[position:position] = rng.choice([b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xb0\x80", b"\xf8\x88\x80\x80\x80"])
    return bytes(line)


def _garbage(rng: random.Random) -> bytes:
    data = bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    return data.replace(b"\n", b" ")


def corpus(rng: random.Random, count: int) -> list[bytes]:
    """`count` single lines (no newline inside), a seeded mix of every kind."""
    lines = []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.55:
            lines.append(json.dumps(_mutated(rng, rng.choice(VALID)), ensure_ascii=rng.random() < 0.5).encode())
        elif kind < 0.65:
            text = json.dumps(rng.choice(VALID))
            lines.append(text[: rng.randrange(len(text))].encode())  # truncated
        elif kind < 0.75:
            lines.append(_garbage(rng))
        elif kind < 0.82:
            lines.append(_nested(rng))
        elif kind < 0.9:
            lines.append(_bad_utf8(rng))
        else:
            lines.append(rng.choice(RAW))
    return lines


def _is_job(line: bytes) -> bool:
    """Whether the server would queue `line` as a job (or stop on it)."""
    try:
        message = msgspec.json.decode(line, type=m.HostMessage)
    except (msgspec.MsgspecError, RecursionError):
        return False
    return not isinstance(message, (m.Status, m.Cancel, m.ValidateEnv))


def _check_replies(lines: list[bytes]) -> list[dict]:
    messages = []
    for raw in lines:
        assert raw.endswith(b"\n") and raw.count(b"\n") == 1, raw[:200]
        msgspec.json.decode(raw, type=m.BackendMessage)  # only protocol messages reach stdout
        message = json.loads(raw)
        assert message.get("code") != "internal", message  # `internal` is for our own bugs
        messages.append(message)
    return messages


def test_handle_line_answers_every_line_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reader's parsing and dispatch, in process, no worker: each line's reply is exactly one line."""
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = random.Random(SEED)
    lines = corpus(rng, 3000)
    output = io.BytesIO()
    server = Server(output)
    start = time.monotonic()
    counts = []
    for line in lines:
        before = output.getvalue().count(b"\n")
        shutdown = server.handle_line(line)
        written = output.getvalue().count(b"\n") - before
        counts.append(written + (shutdown is not None))
        if time.monotonic() - start > 30:
            pytest.fail("the fuzz corpus took more than 30 s")
    blank = [not line.strip() for line in lines]
    wrong = [
        (line[:120], count) for line, count, empty in zip(lines, counts, blank, strict=True) if count != (not empty)
    ]
    assert not wrong, f"{len(wrong)} lines did not get exactly one reply: {wrong[:5]}"
    server.handle_line(b'{"type":"status","id":"after"}')
    messages = _check_replies(output.getvalue().splitlines(keepends=True))
    assert messages[-1]["type"] == "status" and messages[-1]["id"] == "after"
    codes = {message.get("code") for message in messages}
    assert {"parse_error", "unknown_type", "invalid_params"} <= codes  # the corpus reaches every rejection


def _framing_corpus(rng: random.Random) -> tuple[list[bytes], int]:
    """A byte stream of lines with framing edge cases; how many replies it must get."""
    lines = [line for line in corpus(rng, 600) if not _is_job(line)]
    at_limit = b'{"type":"status","id":"' + b"x" * (MAX_LINE_BYTES - 25) + b'"}'
    assert len(at_limit) == MAX_LINE_BYTES  # allowed; one byte more is not
    lines += [at_limit, at_limit + b" ", at_limit + b"  ", b"y" * (3 * MAX_LINE_BYTES), b'{"type":"status"}\r']
    rng.shuffle(lines)
    replies = sum(1 for line in lines if line.strip())
    return lines, replies


def test_serve_frames_any_byte_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` over a pipe, the stream written in random pieces: one reply per non-blank line, then `status`."""
    monkeypatch.setenv("LTX_BACKEND_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = random.Random(SEED + 1)
    lines, expected = _framing_corpus(rng)
    stream = b"\n".join(lines) + b'\n{"type":"status","id":"after"}'  # the last line has no newline
    sink = Sink()

    def script(host: Host) -> None:
        position = 0
        while position < len(stream):
            size = rng.choice([1, 7, 4096, 65536, 1 << 20])
            host.raw(stream[position : position + size])
            position += size
        host.eof()

    run(Server(sink), script)
    messages = _check_replies(sink.lines)
    assert messages[0]["type"] == "ready"
    assert len(messages) - 1 == expected + 1, (len(messages) - 1, expected + 1)
    assert messages[-1]["type"] == "status" and messages[-1]["id"] == "after"
    too_long = [msg for msg in messages if "longer than the limit" in msg.get("message", "")]
    assert len(too_long) == 3  # one and two bytes over the limit, and the 3 MiB line


def test_a_real_serve_process_survives_the_fuzz(tmp_path: Path) -> None:
    rng = random.Random(SEED + 2)
    lines, expected = _framing_corpus(rng)
    lines = [*[line for line in lines if len(line) < 4096][:300], b"z" * (MAX_LINE_BYTES + 10), _nested(rng)]
    expected = sum(1 for line in lines if line.strip())
    env = {**os.environ, "LTX_BACKEND_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ltx_backend.cli.main", "serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    stdin = b"\n".join(lines) + b'\n{"type":"status","id":"after"}\n'
    out, err = process.communicate(stdin, timeout=60)
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    assert b"Traceback" not in err
    messages = _check_replies(out.splitlines(keepends=True))
    assert messages[0]["type"] == "ready" and len(messages) - 1 == expected + 1
    assert messages[-1]["type"] == "status" and messages[-1]["id"] == "after"
