// The WebSocket to the server: the native JSON protocol (docs/protocol.md) over /ws, with
// reconnection. The page's state (rooms, messages) is app.js's; this only keeps a link up.

export const SUBPROTOCOL = "threadchat.json";

// Reconnection waits 1 s, 2 s, 4 s ... up to 30 s, each shortened by up to a fifth at
// random, so that the browsers of a whole class do not all come back in the same second.
export const FIRST_DELAY = 1000;
export const MAX_DELAY = 30000;

export function socketUrl(location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

export function backoffDelay(attempt, random = Math.random) {
  const full = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** Math.max(0, attempt - 1));
  return Math.round(full * (0.8 + 0.2 * random()));
}

export class Connection {
  // onOpen() when a link is up (send hello then); onEvent(event) for each JSON event;
  // onStatus(text, state) when the link changes (state: connecting, open, waiting, closed).
  constructor({ onOpen, onEvent, onStatus }) {
    this.onOpen = onOpen;
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.socket = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.wanted = false; // false once the user quit or was refused for good
    window.addEventListener("online", () => {
      if (this.wanted && this.retryTimer !== null) this.retryNow();
    });
  }

  open() {
    this.wanted = true;
    this.attempt += 1;
    this.retryTimer = null;
    const socket = new WebSocket(socketUrl(window.location), SUBPROTOCOL);
    this.socket = socket;
    this.onStatus(this.attempt > 1 ? `reconnecting (attempt ${this.attempt})…` : "connecting…",
                  "connecting");
    socket.addEventListener("open", () => {
      this.onStatus("connected", "open");
      this.onOpen();
    });
    socket.addEventListener("message", (message) => {
      if (typeof message.data !== "string") return; // JSON comes in text frames only
      let event;
      try {
        event = JSON.parse(message.data);
      } catch {
        return; // the server sends JSON only; anything else is ignored
      }
      this.onEvent(event);
    });
    socket.addEventListener("close", (close) => {
      if (this.socket !== socket) return;
      this.socket = null;
      const why = close.reason ? `: ${close.reason}` : "";
      if (!this.wanted) {
        this.onStatus(`disconnected (${close.code}${why})`, "closed");
        return;
      }
      const delay = backoffDelay(this.attempt);
      this.onStatus(`disconnected (${close.code}${why}); reconnecting in ` +
                    `${Math.round(delay / 1000)} s`, "waiting");
      this.retryTimer = window.setTimeout(() => this.open(), delay);
    });
  }

  // A link that served a session resets the backoff: the next loss retries quickly again.
  established() {
    this.attempt = 0;
  }

  retryNow() {
    window.clearTimeout(this.retryTimer);
    this.open();
  }

  // Close for good (quit, or a refusal that retrying cannot mend).
  close(code = 1000, reason = "") {
    this.wanted = false;
    window.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (this.socket) this.socket.close(code, reason);
  }

  // Close this link but come back (e.g. the name is still held by our previous link).
  dropAndRetry() {
    if (this.socket) this.socket.close(1000, "retrying");
  }

  send(request) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(request));
      return true;
    }
    return false;
  }
}
