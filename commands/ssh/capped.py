"""One stream of a command's output in bounded memory, and the text a row keeps of it.

Plain bytes in, text out: no paramiko here. The text is at most the limit in UTF-8 bytes
with nothing added; how much was left out is a number beside it (`cut_bytes`).
"""

from __future__ import annotations


def clean_text(text: str) -> str:
    """Text safe to store anywhere: NUL (refused by PostgreSQL) becomes U+FFFD, like any
    byte that is not UTF-8."""
    return text.replace("\x00", "\ufffd")


class CappedOutput:
    """One stream in bounded memory: all of it up to `limit` bytes; past that its first and
    its last `limit / 2` bytes (a summary is often at the end).

    `text()` is at most `limit` bytes once encoded as UTF-8, whatever the command printed
    (a byte that is not UTF-8 becomes U+FFFD, three bytes: such output is cut too), with
    nothing of ours in it: `cut_bytes` says how many of the bytes printed it leaves out,
    all of them between its head and its tail. A character split by a cut is dropped.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self.total = 0
        self._head = bytearray()
        self._tail = bytearray()
        self._kept: tuple[str, int] | None = None  # (text, cut bytes) until the next feed

    @property
    def truncated(self) -> bool:
        return self.cut_bytes > 0

    @property
    def cut_bytes(self) -> int:
        return self._fit()[1]

    def feed(self, data: bytes) -> None:
        self._kept = None
        self.total += len(data)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self.tail_limit:
            self._tail += data[-self.tail_limit :]
            del self._tail[: max(len(self._tail) - self.tail_limit, 0)]

    def text(self) -> str:
        return self._fit()[0]

    def _fit(self) -> tuple[str, int]:
        if self._kept is None:
            self._kept = fit_output(bytes(self._head), bytes(self._tail), self.total, self.limit)
        return self._kept


def fit_output(head: bytes, tail: bytes, total: int, limit: int) -> tuple[str, int]:
    """(text, bytes cut) for a stream of `total` bytes of which head and tail were kept (all
    of it, contiguous, when total <= limit): the text is at most `limit` UTF-8 bytes."""
    if total <= limit:
        whole = _decoded(head + tail)
        if _utf8_size(whole) <= limit:
            return whole, 0
    head_text, head_used = _fit_head(head, limit - limit // 2)
    tail_text, tail_used = _fit_tail(tail, limit - _utf8_size(head_text))
    return head_text + tail_text, total - head_used - tail_used


def _decoded(data: bytes) -> str:
    return clean_text(data.decode("utf-8", "replace"))


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8"))


def _fit_head(data: bytes, budget: int) -> tuple[str, int]:
    """The longest beginning of data whose text fits budget: (text, bytes of data used)."""

    def used(size: int) -> int:
        return size - _incomplete_end(data[:size])

    def fits(size: int) -> bool:
        return _utf8_size(_decoded(data[: used(size)])) <= budget

    if not fits(len(data)):
        # Text grows with the bytes it is decoded from (U+FFFD for any byte that is not
        # UTF-8): find the longest beginning that fits.
        low, high = 0, len(data)
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if fits(middle) else (low, middle - 1)
        data = data[:low]
    size = used(len(data))
    return _decoded(data[:size]), size


def _fit_tail(data: bytes, budget: int) -> tuple[str, int]:
    """The longest end of data whose text fits budget: (text, bytes of data used)."""

    def start(offset: int) -> int:
        return offset + _continuation_start(data[offset:])

    def fits(offset: int) -> bool:
        return _utf8_size(_decoded(data[start(offset) :])) <= budget

    low = 0
    if not fits(0):
        high = len(data)
        while low < high:
            middle = (low + high) // 2
            low, high = (low, middle) if fits(middle) else (middle + 1, high)
    first = start(low)
    return _decoded(data[first:]), len(data) - first


def _incomplete_end(data: bytes) -> int:
    """How many bytes at the end of data are an unfinished multi-byte UTF-8 character."""
    for back in range(1, min(len(data), 4) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # not a continuation byte: the last character's first
            size = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return back if back < size else 0
    return 0


def _continuation_start(data: bytes) -> int:
    """How many bytes at the start of data are the rest of a character cut before it."""
    count = 0
    while count < min(len(data), 3) and data[count] & 0xC0 == 0x80:
        count += 1
    return count
