// What has been read: unread counts and the "new messages" line come from the account's read
// markers (docs/protocol.md, "Read markers"), which the server keeps and sends to every
// device, so they agree everywhere and after a reload. A guest has none: the page keeps its
// own, in memory, the same way.

// A marker moves at most once per READ_EVERY ms per conversation (it is a store write on
// the server): the first move is sent at once, later ones coalesced into one at the end.
export const READ_EVERY = 2000;

const time = (ts) => (ts ? Date.parse(ts) : Number.NEGATIVE_INFINITY);

// Whether `ts` comes after the marker `marker` (null: no marker, everything is after it).
export function isAfter(ts, marker) {
  return time(ts) > time(marker);
}

// The later of two marker times (null counts as none).
export function later(a, b) {
  if (!a) return b || null;
  if (!b) return a;
  return time(b) > time(a) ? b : a;
}

// Where unread messages start in `conv`: its marker, or, without one, the time the user
// joined (what was said before they came is not news to them).
export function readLine(conv) {
  return conv.readTs || conv.joinedAt || null;
}

// {count, mention, capped}: messages from others after the marker, of those the page has.
// `capped`: older ones may be unread too (the page holds only the latest of them).
export function unreadOf(conv) {
  const line = readLine(conv);
  let count = 0;
  let mention = false;
  let oldestUnread = true;
  for (let at = conv.entries.length - 1; at >= 0; at -= 1) {
    const entry = conv.entries[at];
    if (entry.kind !== "message") continue;
    if (!isAfter(entry.ts, line)) {
      oldestUnread = false;
      break;
    }
    if (entry.own) continue;
    count += 1;
    if (entry.mentionsMe) mention = true;
  }
  return { count, mention, capped: count > 0 && oldestUnread && conv.more };
}

// The entry of the last message whose top shows in `list` (the message list), or null.
export function lastVisibleMessage(list, entries) {
  const bottom = list.getBoundingClientRect().bottom;
  for (let at = entries.length - 1; at >= 0; at -= 1) {
    const entry = entries[at];
    if (entry.kind !== "message" || !entry.node || !entry.node.isConnected) continue;
    if (entry.node.getBoundingClientRect().top < bottom - 4) return entry;
  }
  return null;
}

// Whether `entry` is the first one the "new messages" line goes before.
export function opensNewMessages(entry, lineTs) {
  return entry.kind === "message" && !entry.own && lineTs !== null && isAfter(entry.ts, lineTs);
}

export function newMessagesLine() {
  const li = document.createElement("li");
  li.className = "new-messages";
  li.setAttribute("role", "separator");
  const label = document.createElement("span");
  label.textContent = "New messages";
  li.append(label);
  return li;
}

// Sends marker moves at a bounded rate: send(key, ts) is called at most once per
// READ_EVERY ms per key, always with the latest time asked.
export class MarkerSender {
  constructor(send) {
    this.send = send;
    this.last = new Map(); // key -> when last sent (ms, performance clock)
    this.waiting = new Map(); // key -> {ts, timer}
  }

  move(key, ts) {
    const waiting = this.waiting.get(key);
    if (waiting) {
      waiting.ts = ts;
      return;
    }
    const wait = (this.last.get(key) ?? Number.NEGATIVE_INFINITY) + READ_EVERY - performance.now();
    if (wait <= 0) {
      this.flush(key, ts);
      return;
    }
    const timer = window.setTimeout(() => {
      const { ts: latest } = this.waiting.get(key);
      this.waiting.delete(key);
      this.flush(key, latest);
    }, wait);
    this.waiting.set(key, { ts, timer });
  }

  flush(key, ts) {
    this.last.set(key, performance.now());
    this.send(key, ts);
  }

  clear() {
    for (const { timer } of this.waiting.values()) window.clearTimeout(timer);
    this.waiting.clear();
    this.last.clear();
  }
}
