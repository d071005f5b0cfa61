// The WebSocket to the server: the native JSON protocol (docs/protocol.md) over /ws.

export const SUBPROTOCOL = "threadchat.json";

export function socketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export class Connection {
  // onEvent(event) for each JSON event; onStatus(text) when the link changes.
  constructor({ onEvent, onStatus }) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.socket = null;
  }

  open(name) {
    const socket = new WebSocket(socketUrl(window.location), SUBPROTOCOL);
    this.socket = socket;
    this.onStatus("connecting…");
    socket.addEventListener("open", () => {
      this.onStatus("connected");
      this.send({ type: "hello", name });
    });
    socket.addEventListener("message", (message) => {
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // the server sends JSON only; anything else is ignored
      }
      this.onEvent(event);
    });
    socket.addEventListener("close", (close) => {
      const why = close.reason ? `: ${close.reason}` : "";
      this.onStatus(`disconnected (${close.code}${why})`);
      this.socket = null;
    });
  }

  send(request) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(request));
      return true;
    }
    return false;
  }
}
