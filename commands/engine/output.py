"""The live output of one run: frames for its stream, a snapshot for GET while it runs.

`LiveOutput` is the SSH executor's on_output callback. Called from the runner thread
with raw bytes per stream, it decodes each stream incrementally and puts its beginning in
the frame log, up to `stream_limit` bytes of frame data (the JSON of the text, in UTF-8:
for plain text about the bytes printed, for random bytes, shown as U+FFFD and escapes, up
to 2.5 times as much), then one `truncated` frame. So a log holds at most the limit per
stream whatever the command prints. The snapshot keeps the beginning and the end
(`output_limit`), as the row will.
"""

from __future__ import annotations

import codecs
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from commands import ssh
from commands.engine import framelog
from commands.results import (
    OUTPUT_FIELDS,
    Frame,
    output_frame,
    output_size,
    truncated_frame,
)

logger = logging.getLogger(__name__)

SNAPSHOT_EVERY = 0.25  # seconds between snapshots of the output so far (GET while running)


class LiveOutput:
    """The on_output callback of one run. Its frames go to the execution's log and to any
    `also` logs (a batch's), as the same Frame objects; `fields` are added to each output
    frame (a batch target's `server`)."""

    def __init__(
        self,
        execution_id: int,
        *,
        stream_limit: int,
        output_limit: int,
        also: Sequence[str] = (),
        fields: dict[str, Any] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.log = framelog.execution_log(execution_id)
        self.logs = [self.log, *also]
        self.fields = fields or {}
        self.backend = framelog.backend()
        self.stream_limit = stream_limit
        self._sent = {"stdout": 0, "stderr": 0}  # frame data sent per stream (output_size)
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace") for name in self._sent
        }
        self._cut: set[str] = set()
        self._kept = {name: ssh.CappedOutput(output_limit) for name in self._sent}
        self._snapshot_at = 0.0
        self._unpublished = False  # output read since the last snapshot
        self._lock = threading.Lock()  # the runner thread feeds, a timer may snapshot
        self._timer: threading.Timer | None = None

    def _output(self, stream: str, text: str) -> Frame:
        return output_frame(self.execution_id, stream, text, **self.fields)

    def _publish(self, frames: list[Frame]) -> None:
        for log in self.logs:
            self.backend.append(log, frames)

    def _stream(self, stream: str, text: str, frames: list[Frame]) -> None:
        """Frames for the decoded text, within the stream's limit; the cut when it is hit."""
        text = ssh.clean_text(text)
        room = self.stream_limit - self._sent[stream]
        size = output_size(text)
        cut = size > room
        if cut:
            text = fit(text, room)
            size = output_size(text)
        if text:
            frames.append(self._output(stream, text))
            self._sent[stream] += size
        if cut:
            self._cut.add(stream)
            frames.append(truncated_frame(self.execution_id, stream, **self.fields))

    def __call__(self, stream: str, data: bytes) -> None:
        frames: list[Frame] = []
        if stream not in self._cut:
            self._stream(stream, self._decoders[stream].decode(data), frames)
        self._publish(frames)
        with self._lock:
            self._kept[stream].feed(data)
            self._unpublished = True
            due = self._snapshot_at + SNAPSHOT_EVERY - time.monotonic()
            if due > 0:
                # Output within the interval is snapshotted when it ends, not only when
                # more output comes: a command may print and then be quiet for minutes.
                if self._timer is None:
                    self._timer = threading.Timer(due, self._publish_snapshot)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        with self._lock:
            self._timer = None
            self._snapshot_at = time.monotonic()
            self._unpublished = False
            fields = self.snapshot()
        try:
            self.backend.set_snapshot(self.log, fields)
        except Exception:  # GET then shows an older snapshot; the row gets everything
            logger.warning("could not publish the output so far of execution %s", self.execution_id)

    def snapshot(self) -> dict[str, Any]:
        """The output fields (results.OUTPUT_FIELDS) of what was read so far."""
        fields: dict[str, Any] = {}
        for name, kept in self._kept.items():
            fields[name] = kept.text()
            fields[f"{name}_truncated"] = kept.truncated
            fields[f"{name}_cut_bytes"] = kept.cut_bytes
        return {name: fields[name] for name in OUTPUT_FIELDS}

    def flush(self) -> None:
        """Publish what the decoders still hold and the last snapshot (at the end of a run),
        if output came since the one before: a run that printed nothing (or nothing new)
        costs no write (with Redis, a round trip less per execute)."""
        frames: list[Frame] = []
        for stream, decoder in self._decoders.items():
            if stream not in self._cut and (text := decoder.decode(b"", final=True)):
                self._stream(stream, text, frames)
        self._publish(frames)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            due = self._unpublished
        if due:
            self._publish_snapshot()


def fit(text: str, room: int) -> str:
    """The longest beginning of text whose output_size is at most room."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if output_size(text[:middle]) <= room else (low, middle - 1)
    return text[:low]
