"""Ranks on one host: MLX's ring backend over localhost TCP, started by us.

``mlx.launch --backend ring`` does the same through a shell per rank; ours is a few lines, picks free ports, keeps
the children as ``subprocess.Popen`` objects (so a dead rank is seen at once and every rank is killed on failure),
and lets the front end process itself be rank 0. The ring backend reads two variables at ``init``:
``MLX_RANK`` and ``MLX_HOSTFILE`` (a JSON list, one ``["ip:port"]`` per rank).

On NVIDIA GPUs the same code runs with ``backend="nccl"`` (``MLX_WORLD_SIZE``, ``NCCL_HOST_IP``, ``NCCL_PORT`` and
one ``CUDA_VISIBLE_DEVICES`` per rank), chosen by ``LTX_DISTRIBUTED_BACKEND=nccl``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from ltx_backend.errors import ErrorCode, LtxError

INIT_TIMEOUT_S = 60.0  # every rank must have joined the group by then


def free_ports(count: int) -> list[int]:
    """Ports free on localhost now (held open together, so they are distinct)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def backend() -> str:
    return os.environ.get("LTX_DISTRIBUTED_BACKEND", "ring")


def rank_environment(rank: int, ranks: int, folder: Path) -> dict[str, str]:
    """The variables rank `rank` of `ranks` needs to join the group (the host file is written once into `folder`)."""
    env = {"MLX_RANK": str(rank), "MLX_WORLD_SIZE": str(ranks)}
    if ranks == 1:  # no group to join: MLX's singleton group
        return env
    if backend() == "nccl":
        ports = folder / "nccl_port"
        if not ports.exists():
            ports.write_text(str(free_ports(1)[0]))
        env |= {"NCCL_HOST_IP": "127.0.0.1", "NCCL_PORT": ports.read_text(), "CUDA_VISIBLE_DEVICES": str(rank)}
        return env
    hostfile = folder / "ring_hosts.json"
    if not hostfile.exists():
        hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"] for port in free_ports(ranks)]))
    return env | {"MLX_HOSTFILE": str(hostfile)}


def _same_code() -> dict[str, str]:
    """PYTHONPATH that makes a child import this very ltx_backend (a checkout, not another installed copy)."""
    root = str(Path(__file__).resolve().parents[2])
    return {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def failed(message: str, hint: str = "") -> LtxError:
    return LtxError(
        ErrorCode.DISTRIBUTED_FAILED,
        message,
        hint or "A rank of the distributed run stopped; its log is above. Run again, or without --distributed.",
    )


def init_group(timeout_s: float = INIT_TIMEOUT_S) -> mx.distributed.Group:
    """Join the group described by this process's environment, or fail clearly when a rank never comes."""
    result: list = []

    def join() -> None:
        try:
            result.append(mx.distributed.init(strict=True, backend=backend()))
        except Exception as error:  # reported below
            result.append(error)

    thread = threading.Thread(target=join, daemon=True)  # init blocks while a peer is missing
    thread.start()
    thread.join(timeout_s)
    if not result:
        raise failed(f"the ranks did not all join the {backend()} group within {timeout_s:.0f} s")
    if isinstance(result[0], Exception):
        raise failed(f"joining the {backend()} group failed: {result[0]}")
    return result[0]


@dataclass
class Followers:
    """Ranks 1..N-1 as child processes of rank 0 (this process), running ``ltx_backend.parallel.follower``.

    Rank 0 writes one JSON line per job to each follower's stdin; a follower answers with one JSON line on its
    stdout when the job ends (``{"ok": true}`` or ``{"error": {...}}``). stderr is inherited (their logs).
    """

    processes: list[subprocess.Popen]
    folder: Path

    @classmethod
    def start(
        cls, ranks: int, folder: Path, timeout_s: float = INIT_TIMEOUT_S
    ) -> tuple[Followers, mx.distributed.Group]:
        os.environ.update(rank_environment(0, ranks, folder))
        processes = []
        for rank in range(1, ranks):
            env = {**os.environ, **_same_code(), **rank_environment(rank, ranks, folder)}
            command = [sys.executable, "-m", "ltx_backend.parallel.follower"]
            processes.append(
                subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        followers = cls(processes, folder)
        try:
            group = init_group(timeout_s)
        except LtxError:
            followers.kill()
            raise
        return followers, group

    def send(self, message: dict) -> None:
        line = json.dumps(message) + "\n"
        for rank, process in enumerate(self.processes, start=1):
            try:
                process.stdin.write(line)
                process.stdin.flush()
            except (BrokenPipeError, OSError) as error:
                raise failed(f"rank {rank} is gone (exit code {process.poll()}): {error}") from error

    def replies(self, timeout_s: float) -> list[dict]:
        """One reply per follower, or an error for each that died or did not answer within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        answers = []
        for rank, process in enumerate(self.processes, start=1):
            line = _read_line(process, max(0.0, deadline - time.monotonic()))
            if line is None:
                code = process.poll()
                state = "did not answer" if code is None else f"exited with code {code}"
                answers.append({"error": {"message": f"rank {rank} {state}"}})
            else:
                answers.append(json.loads(line))
        return answers

    def dead(self) -> list[tuple[int, int]]:
        return [(rank, p.poll()) for rank, p in enumerate(self.processes, start=1) if p.poll() is not None]

    def close(self, timeout_s: float = 10.0) -> None:
        for process in self.processes:
            with contextlib.suppress(OSError):
                process.stdin.close()  # EOF: the follower leaves its loop
        deadline = time.monotonic() + timeout_s
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


def _read_line(process: subprocess.Popen, timeout_s: float) -> str | None:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0] if got and got[0] else None


def run_ranks(command: list[str], ranks: int, folder: Path, timeout_s: float) -> list[subprocess.CompletedProcess]:
    """Run `command` as `ranks` processes of one group (what the tests and benchmarks use); all are killed when one
    fails or the time runs out, so a broken rank never leaves the others waiting."""
    processes = [
        subprocess.Popen(
            command,
            env={**os.environ, **_same_code(), **rank_environment(rank, ranks, folder)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(ranks)
    ]
    outputs: list[tuple[str, str] | None] = [None] * ranks
    threads = [
        threading.Thread(target=lambda i=i: outputs.__setitem__(i, processes[i].communicate()), daemon=True)
        for i in range(ranks)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.poll() is None for p in processes):
        if any(p.poll() not in (None, 0) for p in processes):
            break
        time.sleep(0.05)
    for process in processes:
        if process.poll() is None:
            process.kill()
    for thread in threads:
        thread.join(10)
    return [subprocess.CompletedProcess(command, p.wait(), *(outputs[i] or ("", ""))) for i, p in enumerate(processes)]
