"""Fuzz the native JSON codec: protocols/native/jsonlines.py and requests.py.

Checks, for any line: it gives a request (an `Invalid` one for what cannot be understood),
never an exception; and every request it gives survives the trip back through JSON
(`request_to_dict`, the client's serialiser, then the parser). Run: python tests/fuzz/run.py json
"""

import json
import sys

import atheris
from budget import libfuzzer_argv

# Only our code (and the libraries it parses with) is instrumented: instrumenting all it
# imports, the standard library included, multiplied the harness's start-up.
with atheris.instrument_imports(include=["threadchat"]):
    from threadchat.protocols.native import jsonlines, requests
    from threadchat.protocols.native.line import LineProtocol


def test_one_input(data: bytes) -> None:
    protocol = LineProtocol(max_line=1 << 16)
    # The first line decides the mode: make it JSON, as a JSON client's hello does.
    for request in protocol.receive_data(b"{}\n" + data + b"\n"):
        assert isinstance(request, requests.Request)
        protocol.registered = True
        if isinstance(request, requests.Invalid):
            continue
        body = jsonlines.request_to_dict(request)
        assert body is not None, f"no JSON for {request!r}"
        again = jsonlines.parse_line(json.dumps(body))
        assert again == request, f"{request!r} came back as {again!r}"


if __name__ == "__main__":
    atheris.Setup(libfuzzer_argv(sys.argv), test_one_input)
    atheris.Fuzz()
