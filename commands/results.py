"""What an execution produced, defined once: its result fields and the frames of its stream.

The 200 body of an execute, the `result` frame, the audit row's output columns and the
serializers all take their field names from here. A frame is typed: every one carries
its `type` and the `execution_id` it belongs to, so frames of several executions can share
one socket (a batch) and a reader tells them apart by field, never by a string prefix.

Plain Python: no Django, no DRF (the SSH layer's CommandResult is all it reads).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Protocol

# The output of one command, as the row stores it and every answer shows it. `stdout` and
# `stderr` are at most HOMELAB_OUTPUT_LIMIT bytes in UTF-8 with nothing added: when a
# stream was longer, `*_cut_bytes` says how many of its bytes were left out (between its
# beginning and its end) and `*_truncated` is true. A display adds a marker; the data never.
OUTPUT_FIELDS = (
    "stdout",
    "stderr",
    "stdout_truncated",
    "stderr_truncated",
    "stdout_cut_bytes",
    "stderr_cut_bytes",
)
# The synchronous 200 body (after `execution_id`).
RESULT_FIELDS = (
    "exit_code",
    "stdout",
    "stderr",
    "duration_ms",
    "stdout_truncated",
    "stderr_truncated",
    "stdout_cut_bytes",
    "stderr_cut_bytes",
)
# The `result` frame: the 200 body plus how the execution ended.
RESULT_FRAME_FIELDS = (*RESULT_FIELDS, "status", "error_code", "error_detail")

NO_OUTPUT: dict[str, Any] = {
    "stdout": "",
    "stderr": "",
    "stdout_truncated": False,
    "stderr_truncated": False,
    "stdout_cut_bytes": 0,
    "stderr_cut_bytes": 0,
}


class Output(Protocol):
    """Anything with the output fields: ssh.CommandResult, an Execution row."""

    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_cut_bytes: int
    stderr_cut_bytes: int


def output_of(result: Output | None) -> dict[str, Any]:
    """The output fields of result (empty when there is none)."""
    if result is None:
        return dict(NO_OUTPUT)
    return {name: getattr(result, name) for name in OUTPUT_FIELDS}


def cut_note(cut_bytes: int) -> str:
    """What a display (the admin) shows after a stream that was cut; never in the data."""
    return f"[... {cut_bytes} bytes cut from the middle ...]" if cut_bytes else ""


def result_of(execution: Any) -> dict[str, Any]:
    """The 200 body of a finished execution: its id and RESULT_FIELDS."""
    return {
        "execution_id": execution.pk,
        **{name: getattr(execution, name) for name in RESULT_FIELDS},
    }


def result_frame_fields(execution: Any) -> dict[str, Any]:
    """The fields of an execution's `result` frame."""
    return {name: getattr(execution, name) for name in RESULT_FRAME_FIELDS}


class FrameType(StrEnum):
    STARTED = "started"  # an execution began (the execute socket; a batch target)
    OUTPUT = "output"  # a piece of stdout or stderr
    TRUNCATED = "truncated"  # the stream of one stream stops here (HOMELAB_STREAM_LIMIT)
    RESULT = "result"  # how the execution ended: the last frame of its stream
    ERROR = "error"  # a refusal, before anything ran
    SUMMARY = "summary"  # a batch's counts, the last frame of a batch stream


class Frame:
    """One stream frame: its type, its execution, its other fields, kept only as its JSON
    in UTF-8 (`data`), made once: the same frame may go to several logs and many
    subscribers. Bytes are the compact form: a str of the same output takes up to four
    bytes a character (one astral character in it is enough), and keeping the fields as
    well was a second copy, ~10 MB per MiB of random output (bench/stream_memory.py)."""

    __slots__ = ("data", "execution_id", "type")

    def __init__(self, type: FrameType | str, execution_id: int | None, **fields: Any) -> None:
        self.type = FrameType(type)
        self.execution_id = execution_id
        body = {"type": self.type.value, "execution_id": execution_id, **fields}
        # ensure_ascii=False: U+FFFD and other non-ASCII text cost 1-3 bytes, not 6.
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        try:
            self.data = text.encode()
        except UnicodeEncodeError:  # a lone surrogate (never in output): escaped instead
            self.data = json.dumps(body, separators=(",", ":")).encode()

    @property
    def text(self) -> str:
        """The frame's JSON, as a WebSocket text message takes it."""
        return self.data.decode()

    @property
    def fields(self) -> dict[str, Any]:
        """The fields beyond type and execution_id (read back from the JSON)."""
        body = json.loads(self.data)
        body.pop("type")
        body.pop("execution_id", None)
        return body

    @classmethod
    def decode(cls, raw: str | bytes) -> Frame:
        """A frame from its JSON, kept as it came (a Redis list holds the bytes)."""
        data = raw.encode() if isinstance(raw, str) else bytes(raw)
        body = json.loads(data)
        frame = cls.__new__(cls)
        frame.type = FrameType(body["type"])
        frame.execution_id = body.get("execution_id")
        frame.data = data
        return frame

    def with_fields(self, **fields: Any) -> Frame:
        """This frame with more fields (e.g. `server`, for a batch's socket)."""
        return Frame(self.type, self.execution_id, **{**self.fields, **fields})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and self.data == other.data

    def __hash__(self) -> int:
        return hash(self.data)

    def __repr__(self) -> str:
        return f"Frame({self.data[:120].decode(errors='replace')})"


def output_size(text: str) -> int:
    """What text costs in an output frame: its JSON string, escapes included, in UTF-8 (a
    stream's limit counts this, so a log holds at most the limit whatever the bytes)."""
    return len(json.dumps(text, ensure_ascii=False).encode()) - 2


def output_frame(execution_id: int, stream: str, data: str, **extra: Any) -> Frame:
    return Frame(FrameType.OUTPUT, execution_id, stream=stream, data=data, **extra)


def truncated_frame(execution_id: int, stream: str, **extra: Any) -> Frame:
    return Frame(FrameType.TRUNCATED, execution_id, stream=stream, **extra)


def result_frame(execution: Any) -> Frame:
    return Frame(FrameType.RESULT, execution.pk, **result_frame_fields(execution))


def started_frame(execution_id: int) -> Frame:
    return Frame(FrameType.STARTED, execution_id)


def error_frame(code: str, detail: str, execution_id: int | None = None, **extra: Any) -> Frame:
    return Frame(FrameType.ERROR, execution_id, code=code, detail=detail, **extra)


def stored_frames(execution: Any) -> list[Frame]:
    """A finished execution whose live log is gone: its stored output, then its result."""
    frames = []
    for stream in ("stdout", "stderr"):
        if text := getattr(execution, stream):
            frames.append(output_frame(execution.pk, stream, text))
        if getattr(execution, f"{stream}_truncated"):
            frames.append(truncated_frame(execution.pk, stream))
    frames.append(result_frame(execution))
    return frames
