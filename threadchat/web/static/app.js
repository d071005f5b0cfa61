// The chat page: rooms, private conversations, history, reconnection. No framework, no
// build step. It only translates the JSON protocol of docs/protocol.md: every rule (names,
// rights, history) is the server's, and errors are shown as the server words them.

import { HELP, parseLine } from "./commands.js";
import { Connection } from "./connection.js";
import {
  dayKey, daySeparator, infoItem, mentions, messageItem, modeText, roomsItem, whoisText,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), login: $("login"), loginError: $("login-error"), chat: $("chat"),
  rooms: $("rooms"), people: $("people"), joinForm: $("join-form"), joinRoom: $("join-room"),
  listRooms: $("list-rooms"), title: $("title"), topic: $("topic"), messages: $("messages"),
  composer: $("composer"), text: $("text"), memberList: $("member-list"), notify: $("notify"),
  toggleSidebar: $("toggle-sidebar"), toggleMembers: $("toggle-members"),
};

const HISTORY_PAGE = 50;
const CATCH_UP_PAGE = 500;

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

// Our own message, shown on the server's "ok" without its history id, comes back from
// history (after a reconnection) with it: the two are one message, not two.
function claimOwn(conv, event) {
  const sent = Date.parse(event.ts);
  for (const entry of conv.entries) {
    if (!entry.own || entry.id !== null || entry.event.from !== event.from) continue;
    if (entry.event.text !== event.text || !entry.event.action !== !event.action) continue;
    const acked = Date.parse(entry.ts);
    if (sent <= acked + 1000 && acked - sent < 120000) {
      entry.id = event.id;
      conv.ids.add(event.id);
      conv.lastId = Math.max(conv.lastId, event.id);
      if (entry.node) entry.node.dataset.id = String(event.id);
      return true;
    }
  }
  return false;
}

// Add an entry in time order. Returns false for a message already shown (same history id).
function addEntry(conv, entry) {
  entry.order = order++;
  entry.id ??= null;
  if (entry.id !== null) {
    if (conv.ids.has(entry.id)) return false;
    const mine = entry.kind === "message" && !entry.own && fold(entry.event.from) === fold(me || "");
    if (mine && claimOwn(conv, entry.event)) {
      return false;
    }
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

function renderMessages({ keepBottomDistance = false } = {}) {
  const conv = current();
  const list = ui.messages;
  const fromBottom = list.scrollHeight - list.scrollTop;
  const stick = isAtBottom();
  // Keyboard users keep their place: the focus stays on the "older" button when redrawn.
  const olderFocused = document.activeElement?.closest?.("li.older") != null;
  const nodes = [];
  if (conv && conv.more) nodes.push(olderButton(conv));
  let day = null;
  for (const entry of conv ? conv.entries : []) {
    const entryDay = dayKey(entry.ts);
    if (entryDay !== day) nodes.push(daySeparator(entry.ts));
    day = entryDay;
    nodes.push(nodeFor(entry));
  }
  list.replaceChildren(...nodes);
  if (olderFocused) (list.querySelector("li.older button:not(:disabled)") || list).focus();
  if (keepBottomDistance && !stick) list.scrollTop = list.scrollHeight - fromBottom;
  else list.scrollTop = list.scrollHeight;
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
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = String(conv.unread);
    button.append(badge);
    label += `, ${conv.unread} unread`;
  }
  if (conv.mention) label += ", you were mentioned";
  button.setAttribute("aria-label", label);
  button.addEventListener("click", () => activate(conv.key, { focus: true }));
  li.append(button);
  return li;
}

function renderSidebar() {
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
  active = key;
  for (const [text, ts, className] of early.splice(0)) info(conv, text, ts, className);
  conv.unread = 0;
  conv.mention = false;
  setPanel("");
  renderHeader();
  renderMessages();
  renderMembers();
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

function noteArrival(conv, entry, { mention }) {
  const seen = conv.key === active && attention();
  // Unseen: another conversation's, or this one's while the page is not looked at (the
  // count shows in the tab's title and clears when the page gets the focus back).
  if (!seen) {
    conv.unread += 1;
    if (mention) conv.mention = true;
    renderSidebar();
  }
  if (mention && !seen) notify(conv, entry);
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

function say(conv, text, action) {
  const body = conv.kind === "room"
    ? { type: "say", room: conv.name, text, action }
    : { type: "msg", to: conv.name, text, action };
  return request(body, { kind: "say", key: conv.key, text, action });
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
  early.length = 0;
  active = null;
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
  ui.status.textContent = `connected as ${me}`;
  if (credentials.register) request({ type: "register", password: credentials.password });
  if (!reconnected) {
    ui.text.focus();
    return;
  }
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
      info(conv, `You joined #${event.room}`, event.ts);
      // The join replays the last few messages; the first page of history says whether
      // there are older ones (it comes after the replay, and overlaps it by id only).
      conv.more = true;
      loadOlder(conv, { latest: true });
    }
    if (rejoin) catchUp(conv);
    if (active === null || wantedJoins.delete(fold(event.room))) activate(conv.key);
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
  info(conv, `${event.name} left${reason}`, event.ts);
  if (conv.key === active) renderMembers();
}

function onQuit(event) {
  const who = fold(event.name);
  for (const conv of conversations.values()) {
    const here = conv.kind === "room" ? conv.members.some((name) => fold(name) === who) : conv.key === peerKey(event.name);
    if (!here) continue;
    conv.members = conv.members.filter((name) => fold(name) !== who);
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
  const fromMe = fold(event.from) === fold(me);
  const peer = isPrivate ? (fromMe ? event.to : event.from) : null;
  const conv = isPrivate ? conversation("private", peer) : conversations.get(roomKey(event.room));
  if (!conv) return;
  conv.joining = false;
  const live = !event.history;
  const mention = live && !fromMe && (isPrivate || mentions(event.text, me));
  const entry = { kind: "message", ts: event.ts, id: event.id ?? null, event, own: false, mention };
  // A live message is stored before it is relayed: its id is its history id.
  if (addEntry(conv, entry) && live && !fromMe) noteArrival(conv, entry, { mention });
}

function onHistory(event, purpose) {
  const conv = conversations.get(purpose.key);
  if (!conv) return;
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
    if (conv.key === active) renderMessages({ keepBottomDistance: true });
  } else if (purpose.kind === "catch-up" && event.more && conv.lastId > purpose.after) {
    catchUp(conv);
  }
}

function onOk(event, purpose) {
  if (!purpose || purpose.kind !== "say") return;
  const conv = conversations.get(purpose.key);
  if (!conv) return;
  const said = conv.kind === "room"
    ? { type: "message", room: conv.name, from: me, text: purpose.text, action: purpose.action, ts: event.ts }
    : { type: "private", from: me, to: conv.name, text: purpose.text, action: purpose.action, ts: event.ts };
  addEntry(conv, { kind: "message", ts: event.ts, event: said, own: true, mention: false });
  if (conv.key === active) ui.messages.scrollTop = ui.messages.scrollHeight;
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
  if (purpose && (purpose.kind === "older" || purpose.kind === "catch-up")) {
    const conv = conversations.get(purpose.key);
    if (conv) {
      conv.loading = false;
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
    // Hooks: the events of replies, reactions, edits and typing notices, when the JSON
    // protocol has them, are handled here (render.js's messageDecorators draw them).
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
  if (submitLine(line)) {
    lastSent = line;
    ui.text.value = "";
  }
});

ui.text.addEventListener("keydown", (key) => {
  if (key.key === "ArrowUp" && !ui.text.value && lastSent) {
    key.preventDefault();
    ui.text.value = lastSent;
  }
});

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

window.addEventListener("focus", () => {
  const conv = current();
  if (conv && (conv.unread || conv.mention)) {
    conv.unread = 0;
    conv.mention = false;
    renderSidebar();
  }
});

renderNotifyButton();
setPanel("");
