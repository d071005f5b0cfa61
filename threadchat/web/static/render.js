// Entries of a conversation as list items. Everything a user wrote goes in as text (text
// nodes and textContent, never innerHTML): other people's text is shown as text, whatever
// it contains. Links are made by links.js, from the same text, as <a> elements.

import { appendLinkified } from "./links.js";

const timeFormat = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat([], {
  weekday: "long", year: "numeric", month: "long", day: "numeric",
});

// The local calendar day of an RFC 3339 time, as a key ("2026-12-07").
export function dayKey(ts) {
  const when = new Date(ts);
  const month = String(when.getMonth() + 1).padStart(2, "0");
  const day = String(when.getDate()).padStart(2, "0");
  return `${when.getFullYear()}-${month}-${day}`;
}

export function daySeparator(ts) {
  const li = document.createElement("li");
  li.className = "day";
  li.setAttribute("role", "separator");
  const label = document.createElement("span");
  const today = dayKey(new Date().toISOString());
  label.textContent = dayKey(ts) === today ? "Today" : dayFormat.format(new Date(ts));
  li.append(label);
  return li;
}

function timeElement(ts) {
  const time = document.createElement("time");
  time.dateTime = ts;
  time.textContent = timeFormat.format(new Date(ts));
  time.title = new Date(ts).toLocaleString();
  return time;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function escapeForPattern(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/gu, "\\$&");
}

// Whether `text` names `nick` as a word (nicks fold A-Z only, as the server does).
export function mentions(text, nick) {
  if (!nick) return false;
  const pattern = new RegExp(`(^|[^A-Za-z0-9_\\-\\[\\]\\\\\`^{|}])${escapeForPattern(nick)}` +
                             "($|[^A-Za-z0-9_\\-\\[\\]\\\\`^{|}])", "iu");
  return pattern.test(text);
}

// Hooks for what other work adds to a message (replies, reactions, edits): each is called
// with (li, entry) after the message's own parts are in place, and may append to it.
export const messageDecorators = [];

// A chat message: {event: message|private event, own, mention, id}.
export function messageItem(entry) {
  const { event } = entry;
  const li = document.createElement("li");
  li.className = "message";
  if (event.action) li.classList.add("action");
  if (event.notice) li.classList.add("notice");
  if (entry.own) li.classList.add("own");
  if (entry.mention) li.classList.add("mention");
  if (entry.id !== null && entry.id !== undefined) li.dataset.id = String(entry.id);
  li.append(timeElement(event.ts));
  const body = document.createElement("span");
  body.className = "body";
  if (event.action) {
    body.append(span("sender", `* ${event.from}`), " ");
  } else {
    body.append(span("sender", event.from), " ");
  }
  const text = document.createElement("span");
  text.className = "text";
  appendLinkified(text, event.text);
  body.append(text);
  li.append(body);
  for (const decorate of messageDecorators) decorate(li, entry);
  return li;
}

// A line from the server about the conversation (joins, topics, errors...).
export function infoItem(text, ts, className = "info") {
  const li = document.createElement("li");
  li.className = className;
  if (ts) li.append(timeElement(ts));
  li.append(span("text", text));
  return li;
}

// The answer to "rooms": each room with a button that joins it.
export function roomsItem(event, onJoin) {
  const li = infoItem(event.rooms.length ? "Rooms on this server:" : "No rooms.", event.ts);
  const list = document.createElement("ul");
  list.className = "room-directory";
  for (const room of event.rooms) {
    const entry = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "link-button";
    button.textContent = `#${room.name}`;
    button.addEventListener("click", () => onJoin(room.name));
    entry.append(button, span("count", ` ${room.members} ${room.members === 1 ? "member" : "members"}`));
    if (room.topic) entry.append(span("topic", ` — ${room.topic}`));
    list.append(entry);
  }
  li.append(list);
  return li;
}

export function whoisText(event) {
  const parts = [];
  parts.push(event.account ? `logged in as ${event.account}` : "a guest");
  if (event.realname) parts.push(`real name ${event.realname}`);
  if (event.rooms.length) {
    const rooms = event.rooms.map((room) =>
      room.status.length ? `${room.name} (${room.status.join(", ")})` : room.name);
    parts.push(`in ${rooms.join(", ")}`);
  }
  if (event.away) parts.push(`away: ${event.away}`);
  if (event.operator) parts.push("server operator");
  parts.push(`idle ${event.idle} s`);
  return `${event.name}: ${parts.join("; ")}`;
}

// Mode changes in words, as text mode tells them.
export function modeText(event) {
  const words = (event.modes || []).map((change) => {
    const arg = change.arg ?? "";
    const on = change.on;
    switch (change.mode) {
      case "operator": return on ? `made ${arg} an operator` : `took operator status from ${arg}`;
      case "voice": return on ? `gave ${arg} voice` : `took voice from ${arg}`;
      case "ban": return on ? `banned ${arg}` : `unbanned ${arg}`;
      case "topic_locked": return on ? "locked the topic" : "unlocked the topic";
      case "moderated": return on ? "let only operators and voiced members speak" : "let every member speak";
      case "invite_only": return on ? "made the room invite-only" : "opened the room to everyone";
      case "key": return on ? `set the room key to ${arg}` : "removed the room key";
      case "limit": return on ? `limited the room to ${arg} members` : "removed the member limit";
      default: return `${on ? "set" : "unset"} ${change.mode}${arg ? ` ${arg}` : ""}`;
    }
  });
  const what = words.length ? words.join(", ") : `${event.changes} ${(event.args || []).join(" ")}`;
  return `${event.by} ${what}`;
}
