// The chat page: rooms, private conversations, history, reconnection. No framework, no
// build step. It only translates the JSON protocol of docs/protocol.md: every rule (names,
// rights, history) is the server's, and errors are shown as the server words them.

import { HELP, parseLine } from "./commands.js";
import { Connection } from "./connection.js";
import {
  MarkerSender, isAfter, lastVisibleMessage, later, newMessagesLine, opensNewMessages, readLine,
  unreadOf,
} from "./reading.js";
import { SearchPanel } from "./search.js";
import {
  ReactionPicker, TypingBoard, TypingSender, applyReaction, liveDecorator, quoteOf, typingText,
} from "./live.js";
import {
  dayKey, daySeparator, infoItem, mentions, messageDecorators, messageItem, modeText, roomsItem,
  whoisText,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), login: $("login"), loginError: $("login-error"), chat: $("chat"),
  rooms: $("rooms"), people: $("people"), joinForm: $("join-form"), joinRoom: $("join-room"),
  listRooms: $("list-rooms"), title: $("title"), topic: $("topic"), messages: $("messages"),
  composer: $("composer"), text: $("text"), memberList: $("member-list"), notify: $("notify"),
  toggleSidebar: $("toggle-sidebar"), toggleMembers: $("toggle-members"),
  toggleSearch: $("toggle-search"), typing: $("typing"), composing: $("composing"),
  composingText: $("composing-text"), composingCancel: $("composing-cancel"),
};

const HISTORY_PAGE = 50;
const CATCH_UP_PAGE = 500;
const AROUND_PAGE = 50;
const NEWER_PAGE = 100;

// -- state --------------------------------------------------------------------------------

let me = null; // our name on the server, once welcomed
let account = null; // the account we are logged in to, if any
let credentials = null; // {name, password, register}: what the login form gave
let session = false; // whether the current link has been welcomed
let everWelcomed = false; // whether any link was: a later link is a reconnection
const conversations = new Map(); // key ("#room" or "@nick", folded) -> conversation
let active = null; // key of the conversation shown
let order = 0; // arrival order, to keep entries with equal times in order
let nextRef = 1;
const pending = new Map(); // ref -> what the request was, for its answer
let lastSent = "";
// Rooms the user asked to join: shown as soon as the server says we are in.
const wantedJoins = new Set();
// Read markers the server sent for conversations the page has not opened yet (key -> time).
const markers = new Map();
// Search results to open once their room is joined (key -> the found message).
const jumpAfterJoin = new Map();
// What the composer is doing besides a new message: null, or {mode: "reply" | "edit", entry}
// (answering or editing that message; entry.conv is its conversation).
let composing = null;

// Names fold A-Z only, as the server folds them (docs/protocol.md, "Names and rooms").
const fold = (name) => name.replace(/[A-Z]/gu, (c) => c.toLowerCase());
const roomKey = (name) => `#${fold(name)}`;
const peerKey = (nick) => `@${fold(nick)}`;
const byFoldedName = (a, b) => fold(a).localeCompare(fold(b));

function conversation(kind, name) {
  const key = kind === "room" ? roomKey(name) : peerKey(name);
  let conv = conversations.get(key);
  if (!conv) {
    conv = {
      key, kind, name, entries: [], ids: new Set(), unread: 0, mention: false,
      members: [], topic: "", joined: false, more: kind === "room", loading: false,
      lastId: 0,
      // Read markers (reading.js): the account's marker, where the "new messages" line
      // is drawn, and whether the latest history has come (no marker moves before).
      readTs: markers.get(key) || null, lineTs: null, settled: kind === "private",
      // After opening a search result: the id of the last message before a gap in what
      // the page holds (newer ones are loaded by a button), or null.
      gapAfter: null,
    };
    conversations.set(key, conv);
    renderSidebar();
  }
  return conv;
}

const current = () => (active ? conversations.get(active) : null);

function request(body, purpose = null) {
  const ref = nextRef++;
  if (purpose) pending.set(ref, purpose);
  if (!connection.send({ ...body, ref })) {
    pending.delete(ref);
    return false;
  }
  return true;
}

// -- entries ------------------------------------------------------------------------------

function isAtBottom() {
  const list = ui.messages;
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

// While a page of history is added, the view is drawn once at its end.
let batching = false;
let batchChanged = false;

// Stored messages in the order of their ids (several may share a millisecond); the rest
// by time, then arrival.
function before(a, b) {
  if (a.id !== null && b.id !== null) return a.id < b.id;
  return a.ts < b.ts || (a.ts === b.ts && a.order < b.order);
}

// Add an entry in time order. Returns false for a message already shown (same history id).
function addEntry(conv, entry) {
  entry.order = order++;
  entry.conv = conv;
  entry.id ??= null;
  if (entry.id !== null) {
    if (conv.ids.has(entry.id)) return false;
    conv.ids.add(entry.id);
    conv.lastId = Math.max(conv.lastId, entry.id);
  }
  let at = conv.entries.length;
  while (at > 0 && before(entry, conv.entries[at - 1])) at -= 1;
  conv.entries.splice(at, 0, entry);
  if (conv.key === active && batching) {
    batchChanged = true;
  } else if (conv.key === active) {
    if (at === conv.entries.length - 1) appendToView(conv, entry);
    else renderMessages({ keepBottomDistance: true });
  }
  return true;
}

function nodeFor(entry) {
  if (!entry.node) {
    entry.node = entry.kind === "message" ? messageItem(entry) : entry.build();
  }
  return entry.node;
}

function appendToView(conv, entry) {
  const stick = isAtBottom();
  const previous = conv.entries[conv.entries.length - 2];
  if (!previous || dayKey(previous.ts) !== dayKey(entry.ts)) ui.messages.append(daySeparator(entry.ts));
  if (opensNewMessages(entry, conv.lineTs) && !ui.messages.querySelector("li.new-messages")) {
    ui.messages.append(newMessagesLine());
  }
  ui.messages.append(nodeFor(entry));
  if (stick) ui.messages.scrollTop = ui.messages.scrollHeight;
}

// A line about the conversation. One the page says itself (no server time) goes last: the
// browser's clock may differ from the server's, whose times order the rest.
function info(conv, text, ts, className = "info") {
  const last = conv.entries[conv.entries.length - 1];
  const at = ts || (last ? last.ts : new Date().toISOString());
  addEntry(conv, { kind: "info", ts: at, build: () => infoItem(text, ts, className) });
}

// Lines for the conversation shown; those that come before there is one (logged_in comes
// before the join of the lobby) wait for it.
const early = [];

function showHere(text, ts, className = "info") {
  const conv = current();
  if (conv) info(conv, text, ts, className);
  else early.push([text, ts, className]);
}

// -- rendering ----------------------------------------------------------------------------

function olderButton(conv) {
  const li = document.createElement("li");
  li.className = "older";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button";
  button.textContent = conv.loading ? "Loading older messages…" : "Load older messages";
  button.disabled = conv.loading;
  button.addEventListener("click", () => loadOlder(conv));
  li.append(button);
  return li;
}

// The button under the last message before a gap (see gapAfter).
function newerButton(conv) {
  const li = document.createElement("li");
  li.className = "newer";
  const button = document.createElement("button");
  button.type = "button";
  button.className = "link-button";
  button.textContent = conv.loadingNewer ? "Loading newer messages…" : "Load newer messages";
  button.disabled = Boolean(conv.loadingNewer);
  button.addEventListener("click", () => loadNewer(conv));
  li.append(button);
  return li;
}

function renderMessages({ keepBottomDistance = false, showId = null } = {}) {
  const conv = current();
  const list = ui.messages;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const stick = isAtBottom();
  // Keyboard users keep their place: the focus stays on the "older" button when redrawn.
  const olderFocused = document.activeElement?.closest?.("li.older") != null;
  // So does a message focused (an opened search result) while a page is added around it.
  const focusedMessage = document.activeElement?.matches?.("#messages li.message")
    ? document.activeElement : null;
  const nodes = [];
  if (conv && conv.more) nodes.push(olderButton(conv));
  let day = null;
  let lineDrawn = false;
  for (const entry of conv ? conv.entries : []) {
    const entryDay = dayKey(entry.ts);
    if (entryDay !== day) nodes.push(daySeparator(entry.ts));
    day = entryDay;
    if (!lineDrawn && opensNewMessages(entry, conv.lineTs)) {
      nodes.push(newMessagesLine());
      lineDrawn = true;
    }
    nodes.push(nodeFor(entry));
    if (conv.gapAfter !== null && entry.id === conv.gapAfter) nodes.push(newerButton(conv));
  }
  list.replaceChildren(...nodes);
  if (olderFocused) (list.querySelector("li.older button:not(:disabled)") || list).focus();
  if (focusedMessage && focusedMessage.isConnected) focusedMessage.focus({ preventScroll: true });
  const shown = showId === null ? null : list.querySelector(`li.message[data-id="${showId}"]`);
  if (shown) {
    // A search result: centred, marked, and focused for keyboard and screen-reader users.
    for (const old of list.querySelectorAll("li.found")) old.classList.remove("found");
    shown.classList.add("found");
    shown.tabIndex = -1;
    shown.scrollIntoView({ block: "center" });
    shown.focus({ preventScroll: true });
  } else if (keepBottomDistance && !stick) {
    list.scrollTop = list.scrollHeight - fromBottom;
  } else {
    list.scrollTop = list.scrollHeight;
  }
}

function renderHeader() {
  const conv = current();
  if (!conv) return;
  ui.title.textContent = conv.kind === "room" ? `#${conv.name}` : conv.name;
  ui.topic.textContent = conv.kind === "room" ? conv.topic : "private conversation";
  ui.text.placeholder = conv.kind === "room" ? `Message #${conv.name}, or /help` : `Message ${conv.name}`;
  ui.toggleMembers.hidden = conv.kind !== "room";
}

function renderMembers() {
  const conv = current();
  const items = [];
  for (const name of conv && conv.kind === "room" ? conv.members : []) {
    const li = document.createElement("li");
    if (fold(name) === fold(me || "")) {
      li.textContent = name;
      li.className = "self";
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "member";
      button.textContent = name;
      button.title = `Private conversation with ${name}`;
      button.addEventListener("click", () => openPrivate(name, { focus: true }));
      li.append(button);
    }
    items.push(li);
  }
  ui.memberList.replaceChildren(...items);
  $("members-title").textContent = conv && conv.kind === "room" ? `Members (${conv.members.length})` : "Members";
}

function sidebarItem(conv) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "conversation-button";
  button.dataset.key = conv.key;
  if (conv.key === active) button.setAttribute("aria-current", "true");
  if (conv.mention) button.classList.add("mentioned");
  if (conv.kind === "room" && !conv.joined) button.classList.add("parted");
  button.append(conv.kind === "room" ? `#${conv.name}` : conv.name);
  let label = conv.kind === "room" ? `room ${conv.name}` : `private conversation with ${conv.name}`;
  if (conv.unread) {
    const count = `${conv.unread}${conv.unreadCapped ? "+" : ""}`;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = count;
    button.append(badge);
    label += `, ${count} unread`;
  }
  if (conv.mention) label += ", you were mentioned";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", () => activate(conv.key, { focus: true }));
  li.append(button);
  return li;
}

function renderSidebar() {
  for (const conv of conversations.values()) countUnread(conv);
  const rooms = [];
  const people = [];
  for (const conv of conversations.values()) (conv.kind === "room" ? rooms : people).push(conv);
  const byName = (a, b) => a.key.localeCompare(b.key);
  ui.rooms.replaceChildren(...rooms.sort(byName).map(sidebarItem));
  ui.people.replaceChildren(...people.sort(byName).map(sidebarItem));
  $("people-title").hidden = people.length === 0;
  ui.people.hidden = people.length === 0;
  const unread = [...conversations.values()].reduce((sum, conv) => sum + conv.unread, 0);
  document.title = unread ? `(${unread}) threadchat` : "threadchat";
}

function activate(key, { focus = false } = {}) {
  const conv = conversations.get(key);
  if (!conv) return;
  if (active !== key) {
    typingSender.done();
    if (composing) setComposing(null);
    picker.close({ focusBack: false });
  }
  active = key;
  for (const [text, ts, className] of early.splice(0)) info(conv, text, ts, className);
  conv.lineTs = readLine(conv);
  setPanel("");
  renderHeader();
  renderMessages();
  renderMembers();
  renderTyping();
  markSeen(conv);
  renderSidebar();
  if (focus) ui.text.focus();
  if (conv.kind === "private" && !conv.loadedOnce) {
    conv.loadedOnce = true;
    conv.more = account !== null; // a private history is the two accounts'
    if (conv.more) loadOlder(conv);
  }
}

function removeConversation(conv) {
  conversations.delete(conv.key);
  if (active === conv.key) {
    const next = conversations.get(roomKey("lobby")) || conversations.values().next().value;
    active = null;
    if (next) activate(next.key);
  }
  renderSidebar();
}

// -- unread, mentions, notifications --------------------------------------------------------

function attention() {
  return document.visibilityState === "visible" && document.hasFocus();
}

// Unread counts are what comes after the read marker (reading.js); a message that arrives
// while its conversation is looked at moves the marker, one that arrives unseen counts (in
// the sidebar, and in the tab's title while the page is not looked at).
function noteArrival(conv, entry, { mention }) {
  const seen = conv.key === active && attention();
  if (seen) markSeen(conv);
  else renderSidebar();
  if (mention && !seen) notify(conv, entry);
}

function countUnread(conv) {
  const { count, mention, capped } = unreadOf(conv);
  conv.unread = count;
  conv.mention = mention;
  conv.unreadCapped = capped;
}

// -- read markers ---------------------------------------------------------------------------

// The user reads what shows of the conversation on screen while the page has the focus:
// the marker moves to the last message visible (never back), on this device at once and on
// the server (for the account's other devices) at a bounded rate. Not before the latest
// history has come: until then what shows is not yet where the marker should go.
function markSeen(conv = current()) {
  if (!conv || conv.key !== active || !attention() || ui.chat.hidden || !conv.settled) return;
  const last = lastVisibleMessage(ui.messages, conv.entries);
  // An empty room is read up to the join: what comes later is news.
  const ts = last ? last.ts : conv.kind === "room" && !conv.readTs ? conv.joinedAt : null;
  if (!ts || !isAfter(ts, conv.readTs)) return;
  conv.readTs = ts;
  if (account !== null) markerSender.move(conv.key, ts);
  renderSidebar();
}

const markerSender = new MarkerSender((key, ts) => {
  const conv = conversations.get(key);
  if (!conv || !session) return;
  if (conv.kind === "room" && !conv.joined) return;
  request({ type: "read", target: conv.name, read: ts }, { kind: "read" });
});

// A `read` event: the account's marker, moved on this device or another one.
function onReadMarker(event) {
  if (!event.read) return;
  const key = event.room ? roomKey(event.target) : peerKey(event.target);
  markers.set(key, later(markers.get(key), event.read));
  const conv = conversations.get(key);
  if (!conv) return;
  conv.readTs = later(conv.readTs, event.read);
  // Read elsewhere while this page was not looked at, or the markers that come on
  // connecting (before the conversation's history): the line goes where the reading
  // stopped; while it is looked at the line stays where it was.
  const lineWas = conv.lineTs;
  if (conv.key !== active || !attention() || !conv.settled) conv.lineTs = readLine(conv);
  if (conv.key === active && conv.lineTs !== lineWas) renderMessages({ keepBottomDistance: true });
  renderSidebar();
}

// The page gets the user's attention back: the line goes to where the reading stopped.
function attentionBack() {
  const conv = current();
  if (!conv) return;
  if (conv.unread) {
    conv.lineTs = readLine(conv);
    renderMessages({ keepBottomDistance: true });
  }
  markSeen(conv);
}

function notify(conv, entry) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  const { event } = entry;
  const title = conv.kind === "room" ? `${event.from} in #${conv.name}` : `${event.from} (private)`;
  const notification = new Notification(title, { body: event.text, tag: conv.key });
  notification.addEventListener("click", () => {
    window.focus();
    activate(conv.key, { focus: true });
  });
}

function renderNotifyButton() {
  ui.notify.hidden = !("Notification" in window) || Notification.permission !== "default";
}

// -- messages that live on: replies, reactions, edits, deletions, typing (live.js) -----------

// The entry of message `msgid` in `conv`, if the page holds it.
function findEntry(conv, msgid) {
  if (!conv || !conv.ids.has(msgid)) return null;
  for (let at = conv.entries.length - 1; at >= 0; at -= 1) {
    const entry = conv.entries[at];
    if (entry.kind === "message" && entry.id === msgid) return entry;
  }
  return null;
}

// The conversation a react, edit or delete event is about: its room, or (a private message's)
// the conversation that holds the message, since ids are unique on the server.
function conversationOfLive(event) {
  if (event.room) return conversations.get(roomKey(event.room)) || null;
  for (const conv of conversations.values()) {
    if (conv.kind === "private" && conv.ids.has(event.msgid)) return conv;
  }
  return null;
}

// Draw an entry again after its event changed; the focus stays on the same control.
function redraw(entry) {
  const old = entry.node;
  entry.node = null;
  if (!old || !old.isConnected) return;
  const focused = old.contains(document.activeElement) ? document.activeElement : null;
  const fresh = nodeFor(entry);
  if (old.classList.contains("found")) fresh.classList.add("found");
  if (picker.isOpen && picker.entry === entry) picker.close({ focusBack: false });
  old.replaceWith(fresh);
  if (focused) {
    const same = focused.dataset.action &&
      [...fresh.querySelectorAll("button")].find((control) => control.dataset.action === focused.dataset.action);
    (same || fresh.querySelector(".message-actions button") || ui.text).focus({ preventScroll: true });
  }
}

function onReact(event) {
  const conv = conversationOfLive(event);
  const entry = findEntry(conv, event.msgid);
  if (!entry) return;
  entry.event = { ...entry.event, reactions: applyReaction(entry.event.reactions, event, fold) };
  redraw(entry);
}

function onEdited(event) {
  const conv = conversationOfLive(event);
  const entry = findEntry(conv, event.msgid);
  if (!entry) return;
  entry.event = { ...entry.event, text: event.text, edited: true };
  redraw(entry);
}

function onDeleted(event) {
  const conv = conversationOfLive(event);
  const entry = findEntry(conv, event.msgid);
  if (!entry) return;
  entry.event = { ...entry.event, text: "", deleted: true, reactions: [] };
  if (composing && composing.entry === entry) setComposing(null);
  redraw(entry);
}

function onTyping(event) {
  if (fold(event.from) === fold(me || "")) return;
  const key = event.room ? roomKey(event.room) : peerKey(event.from);
  if (!conversations.has(key)) return;
  typingBoard.note(key, event.from, event.state);
}

function renderTyping() {
  ui.typing.textContent = active ? typingText(typingBoard.names(active)) : "";
}

const typingBoard = new TypingBoard((key) => {
  if (key === active) renderTyping();
}, fold);

// Typing notices go to rooms; a private conversation's are sent once the protocol has them.
const typingSender = new TypingSender((key, state) => {
  const conv = conversations.get(key);
  if (!conv || !session) return;
  if (conv.kind === "private") {
    // The other person only: the server limits it per conversation as it does per room.
    request({ type: "typing", to: conv.name, state }, { kind: "typing", state });
    return;
  }
  if (conv.kind !== "room" || !conv.joined) return;
  request({ type: "typing", room: conv.name, state }, { kind: "typing", state });
});

// The message a request about a message names, with the conversation's name to check it.
function aboutMessage(entry, fields) {
  const { conv } = entry;
  const body = { msgid: entry.id, ...fields };
  if (conv && conv.kind === "room") body.room = conv.name;
  return body;
}

const canAct = (entry) => entry.id !== null && !entry.event.notice && !entry.event.status;

// The reply, reaction and edit buttons of a message (live.js draws them).
messageDecorators.push(liveDecorator({
  me: () => me,
  fold,
  canAct,
  jump: (entry) => jumpTo(entry.conv, entry.event.reply_to),
  reply: (entry) => setComposing({ mode: "reply", entry }),
  react: (entry, reaction, on) => react(entry, reaction, on),
  pick: (entry, anchor) => picker.toggle(entry, anchor),
  edit: (entry) => setComposing({ mode: "edit", entry }),
  remove: (entry) => deleteMessage(entry),
}));

const picker = new ReactionPicker((entry, reaction) => {
  const mine = (entry.event.reactions || []).some(
    (item) => item.reaction === reaction && item.from.some((name) => fold(name) === fold(me)));
  react(entry, reaction, !mine);
});

function react(entry, reaction, on) {
  request({ type: "react", ...aboutMessage(entry, { reaction, on }) }, { kind: "react", key: entry.conv.key });
}

function deleteMessage(entry) {
  // A deletion cannot be undone: asked first.
  if (!window.confirm("Delete this message for everyone?")) return;
  request({ type: "delete", ...aboutMessage(entry, {}) }, { kind: "delete", key: entry.conv.key });
}

// Reply to or edit a message: the line above the composer says which; null ends it.
function setComposing(next) {
  // An edit borrows the message box: what was being written comes back after it.
  const draft = composing && composing.mode === "edit" ? composing.draft : null;
  if (next && next.mode === "edit") next.draft = draft ?? ui.text.value;
  composing = next;
  if (next === null) {
    ui.composing.hidden = true;
    if (draft !== null) ui.text.value = draft;
  } else {
    const { event } = next.entry;
    ui.composingText.textContent = next.mode === "edit"
      ? "Editing your message"
      : `Replying to ${event.from}: ${quoteOf(event.text)}`;
    ui.composing.hidden = false;
    if (next.mode === "edit") ui.text.value = event.text;
    else if (draft !== null) ui.text.value = draft;
  }
  fitComposer();
  ui.text.focus();
  if (next && next.mode === "edit") ui.text.setSelectionRange(ui.text.value.length, ui.text.value.length);
}

// Your last message in the conversation that can still be edited.
function lastOwnMessage(conv) {
  for (let at = conv.entries.length - 1; at >= 0; at -= 1) {
    const entry = conv.entries[at];
    if (entry.kind === "message" && entry.own && canAct(entry) && !entry.event.deleted) return entry;
  }
  return null;
}

// A reply's quote was clicked: show the original, loading the history around it when the
// page does not hold it.
function jumpTo(conv, msgid) {
  if (!conv || !msgid || !conversations.has(conv.key)) return;
  if (conv.key !== active) activate(conv.key);
  if (findEntry(conv, msgid)) {
    renderMessages({ showId: msgid });
    return;
  }
  request(historyBody(conv, { around: msgid, limit: AROUND_PAGE }),
          { kind: "around", key: conv.key, target: msgid });
}

// The composer grows with its lines, up to a few.
function fitComposer() {
  ui.text.style.height = "auto";
  ui.text.style.height = `${Math.min(ui.text.scrollHeight + 2, 200)}px`;
}

// -- requests -----------------------------------------------------------------------------

function loadOlder(conv, { latest = false } = {}) {
  if (conv.loading || !conv.more || !session) return;
  const oldest = conv.entries.reduce(
    (low, entry) => (entry.id !== null && (low === null || entry.id < low.id) ? entry : low), null);
  const body = { type: "history", limit: HISTORY_PAGE };
  if (conv.kind === "room") body.room = conv.name;
  else body.with = conv.name;
  if (oldest && !latest) body.before = oldest.id;
  conv.loading = true;
  if (!request(body, { kind: "older", key: conv.key })) conv.loading = false;
  if (conv.key === active) renderMessages({ keepBottomDistance: true });
}

// Everything after the last stored message we have, or (none yet) since we joined: what
// we already show is recognised by its id and not shown again.
function catchUp(conv) {
  const after = conv.lastId > 0 ? conv.lastId : conv.joinedAt;
  request({ type: "history", room: conv.name, after, limit: CATCH_UP_PAGE },
          { kind: "catch-up", key: conv.key, after: conv.lastId });
}

// -- search results: a conversation around a message ------------------------------------------

function historyBody(conv, fields) {
  return conv.kind === "room" ? { type: "history", room: conv.name, ...fields }
                              : { type: "history", with: conv.name, ...fields };
}

// Opens a search result's conversation around it (`history` with `around`).
function openAround(found) {
  const isPrivate = found.type === "private";
  const fromMe = fold(found.from) === fold(me || "");
  let conv;
  if (isPrivate) {
    conv = conversation("private", fromMe ? found.to : found.from);
    conv.loadedOnce = true; // the page around the result stands for the first page
    conv.more = true;
  } else {
    conv = conversations.get(roomKey(found.room));
    if (!conv || !conv.joined) {
      jumpAfterJoin.set(roomKey(found.room), found);
      joinRoom(found.room);
      return;
    }
  }
  activate(conv.key);
  if (conv.ids.has(found.id) && conv.gapAfter === null) {
    renderMessages({ showId: found.id });
    return;
  }
  request(historyBody(conv, { around: found.id, limit: AROUND_PAGE }),
          { kind: "around", key: conv.key, target: found.id });
}

// The page around a result. What the page held may be newer and not next to it: then a
// gap is kept after the page's last message, with a button that loads what is between.
function onAroundPage(conv, event, target) {
  if (conv.gapAfter !== null) {
    // An earlier result's page: dropped, so that at most one gap is ever held.
    const dropped = conv.gapAfter;
    conv.entries = conv.entries.filter((entry) => entry.id === null || entry.id > dropped);
    conv.ids = new Set(conv.entries.filter((entry) => entry.id !== null).map((entry) => entry.id));
    conv.gapAfter = null;
  }
  const held = conv.entries.filter((entry) => entry.id !== null).map((entry) => entry.id);
  const heldOldest = held.length ? Math.min(...held) : null;
  const ids = event.messages.map((message) => message.id);
  addPage(conv, event.messages);
  const pageNewest = ids.length ? Math.max(...ids) : null;
  if (pageNewest !== null && (heldOldest === null || pageNewest < heldOldest)) {
    conv.gapAfter = pageNewest;
  }
  conv.more = true;
  renderMessages({ showId: target });
  if (!conv.ids.has(target)) info(conv, "That message is no longer in the history.", null, "error");
}

function loadNewer(conv) {
  if (conv.gapAfter === null || conv.loadingNewer || !session) return;
  conv.loadingNewer = true;
  if (!request(historyBody(conv, { after: conv.gapAfter, limit: NEWER_PAGE }),
               { kind: "newer", key: conv.key })) {
    conv.loadingNewer = false;
  }
  if (conv.key === active) renderMessages({ keepBottomDistance: true });
}

function onNewerPage(conv, event) {
  conv.loadingNewer = false;
  const gap = conv.gapAfter;
  if (gap === null) return;
  const after = conv.entries.filter((entry) => entry.id !== null && entry.id > gap).map((entry) => entry.id);
  const heldNext = after.length ? Math.min(...after) : null;
  addPage(conv, event.messages);
  const ids = event.messages.map((message) => message.id);
  const pageNewest = ids.length ? Math.max(...ids) : gap;
  const closed = ids.length < NEWER_PAGE || (heldNext !== null && pageNewest >= heldNext);
  conv.gapAfter = closed ? null : pageNewest;
  if (conv.key === active) renderMessages({ keepBottomDistance: true });
}

// Stored messages added at once, drawn by the caller.
function addPage(conv, messages) {
  batching = true;
  try {
    for (const message of messages) onChat(message);
  } finally {
    batching = false;
  }
}

function say(conv, text, action) {
  const body = conv.kind === "room"
    ? { type: "say", room: conv.name, text, action }
    : { type: "msg", to: conv.name, text, action };
  const purpose = { kind: "say", key: conv.key, text, action };
  if (composing && composing.mode === "reply" && composing.entry.conv === conv) {
    const { entry } = composing;
    body.reply_to = entry.id;
    purpose.reply = { msgid: entry.id, quote: { from: entry.event.from, text: quoteOf(entry.event.text) } };
  }
  const sent = request(body, purpose);
  if (sent && purpose.reply) setComposing(null);
  return sent;
}

// The composer's text replaces the text of the message being edited.
function sendEdit(text) {
  const { entry } = composing;
  if (text === entry.event.text) {
    setComposing(null);
    return true;
  }
  const sent = request({ type: "edit", ...aboutMessage(entry, { text }) }, { kind: "edit", key: entry.conv.key });
  if (sent) setComposing(null);
  return sent;
}

function openPrivate(nick, { focus = false } = {}) {
  const conv = conversation("private", nick);
  activate(conv.key, { focus });
  return conv;
}

function joinRoom(name) {
  const conv = conversations.get(roomKey(name));
  if (conv && conv.joined) {
    activate(conv.key, { focus: true });
    return;
  }
  wantedJoins.add(fold(name));
  request({ type: "join", room: name }, { kind: "join", room: name });
}

function submitLine(line) {
  const conv = current();
  if (!conv) return false;
  const action = parseLine(line, conv);
  if (action.error) {
    showHere(action.error, null, "error");
    return true;
  }
  if (action.open) {
    const target = openPrivate(action.open, { focus: true });
    return action.say === undefined || say(target, action.say, false);
  }
  if (action.say !== undefined) return say(conv, action.say, action.action);
  if (action.search) {
    searchPanel.show(action.search);
    return true;
  }
  if (action.request) {
    if (action.request.type === "join") {
      joinRoom(action.request.room);
      return true;
    }
    const { type } = action.request;
    // A login or registration by command is remembered, to log in again after a lost link.
    const purpose = type === "who" ? { kind: "who" }
      : type === "login" || type === "register" ? { kind: "account", ...action.request } : null;
    return request(action.request, purpose);
  }
  switch (action.local) {
    case "help":
      for (const line of HELP) showHere(line);
      return true;
    case "clear":
      conv.entries = conv.entries.filter((entry) => entry.kind === "message");
      renderMessages();
      return true;
    case "close":
      removeConversation(conv);
      return true;
    case "history":
      conv.more = true;
      loadOlder(conv);
      return true;
    case "quit":
      quit(action.reason);
      return true;
    default:
      return false;
  }
}

function quit(reason) {
  connection.wanted = false;
  connection.send(reason ? { type: "quit", reason } : { type: "quit" });
  resetToLogin("You left the chat.");
}

function resetToLogin(message) {
  session = false;
  everWelcomed = false;
  me = null;
  account = null;
  conversations.clear();
  markers.clear();
  jumpAfterJoin.clear();
  markerSender.clear();
  typingBoard.clear();
  typingSender.reset();
  composing = null;
  ui.composing.hidden = true;
  early.length = 0;
  active = null;
  ui.toggleSearch.hidden = true;
  searchPanel.panel.hidden = true;
  searchPanel.showError(""); // another user may log in next: no results of this one
  ui.chat.hidden = true;
  ui.login.hidden = false;
  ui.loginError.textContent = message || "";
  renderSidebar();
  $("name").focus();
}

// -- events -------------------------------------------------------------------------------

function onWelcome(event) {
  const reconnected = everWelcomed;
  me = event.name;
  session = true;
  everWelcomed = true;
  connection.established();
  ui.login.hidden = true;
  ui.chat.hidden = false;
  ui.toggleSearch.hidden = false;
  ui.status.textContent = `connected as ${me}`;
  if (credentials.register) request({ type: "register", password: credentials.password });
  if (!reconnected) {
    ui.text.focus();
    return;
  }
  typingSender.reset();
  // Back after a lost link: join the rooms we were in again; each join's replay and a
  // history query after the last message we have fill the gap (entries are kept by id, so
  // nothing shows twice).
  for (const conv of conversations.values()) {
    conv.loading = false; // what was asked on the lost link is not coming
    if (conv.kind !== "room") continue;
    if (conv.joined && fold(conv.name) !== "lobby") {
      request({ type: "join", room: conv.name }, { kind: "rejoin", room: conv.name });
    }
    conv.rejoining = conv.joined;
    conv.joined = false;
  }
  renderSidebar();
}

function onJoin(event) {
  const conv = conversation("room", event.room);
  if (fold(event.name) === fold(me)) {
    const rejoin = conv.rejoining;
    conv.rejoining = false;
    conv.joined = true;
    // The topic that follows is the room's, not news (see "topic").
    conv.joining = true;
    if (!rejoin) {
      conv.joinedAt = event.ts;
      conv.settled = false;
      info(conv, `You joined #${event.room}`, event.ts);
      // The join replays the last few messages; the first page of history says whether
      // there are older ones (it comes after the replay, and overlaps it by id only).
      conv.more = true;
      loadOlder(conv, { latest: true });
    }
    if (rejoin) catchUp(conv);
    if (active === null || wantedJoins.delete(fold(event.room))) activate(conv.key);
    const found = jumpAfterJoin.get(conv.key);
    if (found) {
      jumpAfterJoin.delete(conv.key);
      openAround(found);
    }
    renderSidebar();
    return;
  }
  if (!conv.members.includes(event.name)) {
    conv.members.push(event.name);
    conv.members.sort(byFoldedName);
  }
  info(conv, `${event.name} joined`, event.ts);
  if (conv.key === active) renderMembers();
}

function onLeave(event) {
  const conv = conversations.get(roomKey(event.room));
  if (!conv) return;
  const reason = event.reason ? ` (${event.reason})` : "";
  if (fold(event.name) === fold(me)) {
    conv.joined = false;
    conv.members = [];
    if (event.reason && event.reason.startsWith("kicked by")) {
      info(conv, `You were ${event.reason}`, event.ts, "error");
      renderSidebar();
    } else {
      removeConversation(conv);
    }
    return;
  }
  conv.members = conv.members.filter((name) => fold(name) !== fold(event.name));
  typingBoard.stop(conv.key, event.name);
  info(conv, `${event.name} left${reason}`, event.ts);
  if (conv.key === active) renderMembers();
}

function onQuit(event) {
  const who = fold(event.name);
  for (const conv of conversations.values()) {
    const here = conv.kind === "room" ? conv.members.some((name) => fold(name) === who) : conv.key === peerKey(event.name);
    if (!here) continue;
    conv.members = conv.members.filter((name) => fold(name) !== who);
    typingBoard.stop(conv.key, event.name);
    info(conv, `${event.name} quit (${event.reason})`, event.ts);
  }
  renderMembers();
}

function onNick(event) {
  if (me && fold(event.old) === fold(me)) me = event.new;
  const old = fold(event.old);
  for (const conv of conversations.values()) {
    const index = conv.members.findIndex((name) => fold(name) === old);
    if (index >= 0) {
      conv.members[index] = event.new;
      conv.members.sort(byFoldedName);
      info(conv, `${event.old} is now known as ${event.new}`, event.ts);
    }
  }
  const privateConv = conversations.get(peerKey(event.old));
  if (privateConv && !conversations.has(peerKey(event.new))) {
    conversations.delete(privateConv.key);
    privateConv.key = peerKey(event.new);
    privateConv.name = event.new;
    conversations.set(privateConv.key, privateConv);
    if (active === peerKey(event.old)) active = privateConv.key;
    info(privateConv, `${event.old} is now known as ${event.new}`, event.ts);
  }
  if (session) ui.status.textContent = `connected as ${me}`;
  renderHeader();
  renderMembers();
  renderSidebar();
}

function onChat(event) {
  const isPrivate = event.type === "private";
  // Ours: sent from this device or (own) from another device of the account.
  const fromMe = Boolean(event.own) || fold(event.from) === fold(me);
  const peer = isPrivate ? (fromMe ? event.to : event.from) : null;
  const conv = isPrivate ? conversation("private", peer) : conversations.get(roomKey(event.room));
  if (!conv) return;
  conv.joining = false;
  const live = !event.history;
  const mentionsMe = !fromMe && (isPrivate || mentions(event.text, me));
  const mention = live && mentionsMe;
  const entry = {
    kind: "message", ts: event.ts, id: event.id ?? null, event, own: fromMe, mention, mentionsMe,
  };
  // A message that comes while the user reads an up-to-date conversation is no news: no
  // "new messages" line before it.
  if (live && conv.key === active && attention() && !ui.messages.querySelector("li.new-messages")) {
    conv.lineTs = later(conv.lineTs, event.ts);
  }
  if (live) typingBoard.stop(conv.key, event.from); // their message ends their typing
  // A live message is stored before it is relayed: its id is its history id.
  if (!addEntry(conv, entry)) return;
  if (!live) {
    // Stored messages that come unasked (an always-on account's catch-up, thousands at
    // once): counted once they have all come.
    if (!batching) scheduleCount();
  } else if (fromMe) {
    markSeen(conv);
  } else {
    noteArrival(conv, entry, { mention });
  }
}

let countTimer = null;

function scheduleCount() {
  if (countTimer !== null) return;
  countTimer = window.setTimeout(() => {
    countTimer = null;
    markSeen();
    renderSidebar();
  }, 50);
}

function onHistory(event, purpose) {
  const conv = conversations.get(purpose.key);
  if (!conv) return;
  if (purpose.kind === "around") {
    onAroundPage(conv, event, purpose.target);
    return;
  }
  if (purpose.kind === "newer") {
    onNewerPage(conv, event);
    return;
  }
  batching = true;
  batchChanged = false;
  try {
    for (const message of event.messages) onChat(message);
  } finally {
    batching = false;
  }
  if (batchChanged && purpose.kind !== "older" && conv.key === active) {
    renderMessages({ keepBottomDistance: true });
  }
  if (purpose.kind === "older") {
    conv.loading = false;
    conv.more = event.more;
    conv.settled = true;
    if (conv.key === active) renderMessages({ keepBottomDistance: true });
    markSeen(conv);
    renderSidebar();
  } else if (purpose.kind === "catch-up" && event.more && conv.lastId > purpose.after) {
    catchUp(conv);
  } else {
    markSeen(conv);
    renderSidebar();
  }
}

function onOk(event, purpose) {
  if (!purpose || purpose.kind !== "say") return;
  const conv = conversations.get(purpose.key);
  if (!conv) return;
  const said = conv.kind === "room"
    ? { type: "message", room: conv.name, from: me, text: purpose.text, action: purpose.action, ts: event.ts }
    : { type: "private", from: me, to: conv.name, text: purpose.text, action: purpose.action, ts: event.ts };
  if (purpose.reply) Object.assign(said, { reply_to: purpose.reply.msgid, reply: purpose.reply.quote });
  // The ok of a stored message names it (msgid): our copy can be edited, deleted, reacted to.
  const id = event.msgid ?? null;
  if (id !== null) said.msgid = id;
  addEntry(conv, { kind: "message", ts: event.ts, id, event: said, own: true, mention: false });
  if (conv.key === active) ui.messages.scrollTop = ui.messages.scrollHeight;
  markSeen(conv); // what one answers, one has read
}

function onError(event, purpose) {
  if (!session) {
    // The name was refused. After a lost link our old connection may still hold the name
    // for a moment: try again with the usual backoff. A first login is the user's to fix.
    if (everWelcomed && event.code === "name_in_use") {
      connection.dropAndRetry();
      return;
    }
    connection.close();
    resetToLogin(event.message);
    return;
  }
  if (purpose && purpose.kind === "search") {
    searchPanel.showError(event.message);
    return;
  }
  if (purpose && purpose.kind === "read") return; // a marker not kept: the page keeps its own
  if (purpose && purpose.kind === "typing") {
    if (event.code === "too_often") typingSender.refused(purpose.state);
    return; // not the user's business: the notice is sent again when it may be
  }
  if (purpose && (purpose.kind === "older" || purpose.kind === "catch-up" ||
                  purpose.kind === "around" || purpose.kind === "newer")) {
    const conv = conversations.get(purpose.key);
    if (conv) {
      conv.loading = false;
      conv.loadingNewer = false;
      conv.settled = true;
      conv.more = false;
      if (conv.key === active) renderMessages({ keepBottomDistance: true });
    }
    if (["history_off", "not_logged_in", "not_in_room"].includes(event.code)) return;
  }
  const conv = purpose && purpose.key ? conversations.get(purpose.key) : null;
  if (conv) info(conv, event.message, event.ts, "error");
  else showHere(event.message, event.ts, "error");
}

function onEvent(event) {
  const purpose = event.ref !== undefined ? pending.get(event.ref) : undefined;
  if (event.ref !== undefined) pending.delete(event.ref);
  switch (event.type) {
    case "ping":
      connection.send({ type: "pong", token: event.token });
      return;
    case "welcome":
      onWelcome(event);
      return;
    case "logged_in":
      account = event.account;
      if (purpose && purpose.kind === "account") {
        credentials = { name: event.account, password: purpose.password, register: false };
      }
      if (credentials) credentials.register = false; // from now on a login, not a registration
      showHere(`You are logged in as ${event.account}.`, event.ts);
      return;
    case "join":
      onJoin(event);
      return;
    case "leave":
      onLeave(event);
      return;
    case "quit":
      onQuit(event);
      return;
    case "nick":
      onNick(event);
      return;
    case "topic": {
      const conv = conversations.get(roomKey(event.room));
      if (!conv) return;
      conv.topic = event.topic || "";
      if (event.by && !conv.joining) info(conv, `${event.by} set the topic: ${event.topic}`, event.ts);
      conv.joining = false;
      if (conv.key === active) renderHeader();
      return;
    }
    case "who": {
      const conv = conversations.get(roomKey(event.room));
      if (conv) {
        conv.joining = false;
        conv.members = [...event.members].sort(byFoldedName);
        if (conv.key === active) renderMembers();
      }
      if (purpose && purpose.kind === "who") showHere(`In #${event.room}: ${event.members.join(", ")}`, event.ts);
      return;
    }
    case "message":
    case "private":
      onChat(event);
      return;
    case "history":
      if (purpose) onHistory(event, purpose);
      return;
    case "read":
      onReadMarker(event);
      return;
    case "search":
      searchPanel.showResults(event);
      return;
    case "ok":
      onOk(event, purpose);
      return;
    case "error":
      onError(event, purpose);
      return;
    case "rooms":
      addEntry(current(), { kind: "info", ts: event.ts, build: () => roomsItem(event, joinRoom) });
      return;
    case "notice":
      for (const line of event.text.split("\n")) showHere(line, event.ts);
      return;
    case "mode":
      if (event.room && conversations.has(roomKey(event.room))) {
        info(conversations.get(roomKey(event.room)), modeText(event), event.ts);
      } else {
        showHere(modeText(event), event.ts);
      }
      return;
    case "moderation": {
      const conv = conversations.get(roomKey(event.room));
      if (conv) info(conv, `${event.by} ${event.action === "mute" ? "muted" : "unmuted"} ${event.target}`, event.ts);
      return;
    }
    case "away":
      showHere(event.away === null ? `${event.name} is back` : `${event.name} is away: ${event.away}`, event.ts);
      return;
    case "invite":
      showHere(event.notify ? `${event.by} invited ${event.name} to #${event.room}`
                            : `${event.by} invites you to #${event.room}: /join ${event.room}`, event.ts);
      return;
    case "wallops":
      showHere(`wallops from ${event.from}: ${event.text}`, event.ts);
      return;
    case "whois":
      showHere(whoisText(event), event.ts);
      return;
    case "react":
      onReact(event);
      return;
    case "edit":
      onEdited(event);
      return;
    case "delete":
      onDeleted(event);
      return;
    case "typing":
      onTyping(event);
      return;
    default:
      return;
  }
}

function onOpen() {
  session = false;
  const hello = { type: "hello", name: me || credentials.name };
  if (credentials.password && !credentials.register) {
    // A password logs in to the account of that name (we may have changed nick since).
    hello.name = account || credentials.name;
    hello.password = credentials.password;
  }
  connection.send(hello);
}

const connection = new Connection({
  onOpen,
  onEvent,
  onStatus: (text, state) => {
    ui.status.textContent = text;
    if (state !== "open") session = false;
  },
});

// -- the page's controls ------------------------------------------------------------------

function setPanel(panel) {
  document.body.dataset.panel = panel;
  ui.toggleSidebar.setAttribute("aria-expanded", String(panel === "sidebar"));
  ui.toggleMembers.setAttribute("aria-expanded", String(panel === "members"));
}

ui.login.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const form = new FormData(ui.login);
  const name = String(form.get("name")).trim();
  const password = String(form.get("password") || "");
  const register = form.get("register") === "on";
  if (!name) return;
  if (register && !password) {
    ui.loginError.textContent = "Choose a password to create an account.";
    return;
  }
  ui.loginError.textContent = "";
  credentials = { name, password, register };
  connection.open();
});

ui.composer.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const line = ui.text.value;
  if (!line.trim()) return;
  const editing = composing && composing.mode === "edit";
  if (editing) {
    sendEdit(line); // the box gets back what was being written before the edit
  } else if (submitLine(line)) {
    lastSent = line;
    ui.text.value = "";
    fitComposer();
    typingSender.done();
  }
});

ui.text.addEventListener("keydown", (key) => {
  // Enter sends, Shift+Enter starts a new line (and Enter that ends an input method's
  // composition is the composition's).
  if (key.key === "Enter" && !key.shiftKey && !key.isComposing) {
    key.preventDefault();
    ui.composer.requestSubmit();
    return;
  }
  if (key.key === "Escape" && (composing || picker.isOpen)) {
    key.preventDefault();
    key.stopPropagation(); // the page's Escape would close panels too
    picker.close({ focusBack: false });
    setComposing(null);
    return;
  }
  if (key.key === "ArrowUp" && !ui.text.value) {
    // The up arrow edits your last message here; without one it recalls the last line.
    const conv = current();
    const last = conv && !composing ? lastOwnMessage(conv) : null;
    if (last) {
      key.preventDefault();
      setComposing({ mode: "edit", entry: last });
    } else if (lastSent) {
      key.preventDefault();
      ui.text.value = lastSent;
      fitComposer();
    }
  }
});

ui.text.addEventListener("input", () => {
  fitComposer();
  const conv = current();
  // An edit is not typing a new message.
  if (conv && !(composing && composing.mode === "edit")) typingSender.typed(conv.key, ui.text.value);
});

ui.composingCancel.addEventListener("click", () => setComposing(null));

ui.joinForm.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const name = ui.joinRoom.value.trim().replace(/^#/u, "");
  if (!name) return;
  joinRoom(name);
  ui.joinRoom.value = "";
});

ui.listRooms.addEventListener("click", () => request({ type: "rooms" }));

ui.messages.addEventListener("scroll", () => {
  const conv = current();
  if (conv && ui.messages.scrollTop < 60) loadOlder(conv);
  markSeen(conv);
});

const searchPanel = new SearchPanel(
  {
    panel: $("search"), form: $("search-form"), text: $("search-text"), room: $("search-room"),
    from: $("search-from"), since: $("search-since"), until: $("search-until"),
    status: $("search-status"), results: $("search-results"), toggle: ui.toggleSearch,
  },
  {
    ask: (body) => request(body, { kind: "search" }),
    open: openAround,
    rooms: () => [...conversations.values()]
      .filter((conv) => conv.kind === "room" && conv.joined).map((conv) => conv.name).sort(byFoldedName),
    me: () => me,
    fold,
  },
);

ui.toggleSearch.addEventListener("click", () => {
  if (searchPanel.isOpen) searchPanel.close();
  else searchPanel.show();
});

ui.notify.addEventListener("click", async () => {
  await Notification.requestPermission();
  renderNotifyButton();
});

ui.toggleSidebar.addEventListener("click", () => {
  setPanel(document.body.dataset.panel === "sidebar" ? "" : "sidebar");
});
ui.toggleMembers.addEventListener("click", () => {
  setPanel(document.body.dataset.panel === "members" ? "" : "members");
});

document.addEventListener("keydown", (key) => {
  if (key.key === "Escape") {
    setPanel("");
    if (!ui.chat.hidden) ui.text.focus();
    return;
  }
  if (key.altKey && (key.key === "ArrowUp" || key.key === "ArrowDown")) {
    const keys = [...ui.rooms.querySelectorAll("button"), ...ui.people.querySelectorAll("button")]
      .map((button) => button.dataset.key);
    if (!keys.length) return;
    key.preventDefault();
    const step = key.key === "ArrowUp" ? -1 : 1;
    const index = keys.indexOf(active);
    activate(keys[(index + step + keys.length) % keys.length], { focus: true });
  }
});

window.addEventListener("focus", attentionBack);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") attentionBack();
});

renderNotifyButton();
setPanel("");
