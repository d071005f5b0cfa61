"""Line ends on the wire, shared by the native and IRC framers: CR LF, LF and a lone CR.

A lone CR ends a line too (RFC 1459, section 8, has servers treat either CR or LF as the end
of a message; some terminals and clients send CR alone). Without that, such a peer's line
never ended: it was buffered up to the 64 KiB limit and the connection then closed.

>>> ends = LineEnds()
>>> ends.normalize(b"one\\rtwo\\r\\nthree\\r")
b'one\\ntwo\\nthree\\n'
>>> ends.normalize(b"\\nfour\\n")  # this LF completes the CR that ended the last read
b'four\\n'
"""


class LineEnds:
    """Turns every line end of one byte stream into LF, across reads.

    A CR that ends one read and an LF that starts the next are one CR LF, one line end, not a
    line followed by an empty one: the CR is taken as the end at once (the line is not held
    back waiting for the next read), and the LF is dropped when it comes.
    """

    __slots__ = ("_after_cr",)

    def __init__(self) -> None:
        self._after_cr = False

    def normalize(self, data: bytes) -> bytes:
        if not data:
            # Nothing read: a CR that ended the last read still waits for its LF.
            return data
        if self._after_cr and data.startswith(b"\n"):
            data = data[1:]
        if b"\r" not in data:
            # The common case (LF only, as nc sends): one scan, no copy.
            self._after_cr = False
            return data
        self._after_cr = data.endswith(b"\r")
        # CR LF first, so that only lone CRs are left for the second pass.
        return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
