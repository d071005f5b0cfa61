"""The web port, sans-I/O: HTTP for the chat page's static files and the WebSocket handshake
(h11), and WebSocket framing (websockets' sans-I/O `ServerProtocol`). No socket, no thread:
`transports/web.py` drives it.

What is carried over the WebSocket (the native JSON protocol or IRC) is not this package's
business: the transport composes `protocols/native` or `protocols/irc` with it, so each
protocol package stays independent of the others.
"""
