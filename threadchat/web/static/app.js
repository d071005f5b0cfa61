// The chat page: give a name, land in the lobby, chat. No framework, no build step.

import { Connection } from "./connection.js";
import { renderEvent } from "./render.js";

const status = document.getElementById("status");
const login = document.getElementById("login");
const chat = document.getElementById("chat");
const messages = document.getElementById("messages");
const composer = document.getElementById("composer");
const text = document.getElementById("text");
const roomTitle = document.getElementById("room-title");

let room = "lobby";
let me = null;
// Our own messages, shown once the server has taken them (its "ok" carries their ref).
const pending = new Map();
let nextRef = 1;

function show(element) {
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 40;
  messages.append(element);
  if (atBottom) messages.scrollTop = messages.scrollHeight;
}

function onEvent(event) {
  if (event.type === "ping") {
    connection.send({ type: "pong", token: event.token });
    return;
  }
  if (event.type === "ok" && pending.has(event.ref)) {
    const said = pending.get(event.ref);
    pending.delete(event.ref);
    show(renderEvent({ type: "message", room: said.room, from: me, text: said.text,
                       ts: new Date().toISOString() }));
    return;
  }
  if (event.type === "error" && event.ref !== undefined) pending.delete(event.ref);
  if (event.type === "nick" && event.old === me) me = event.new;
  if (event.type === "welcome") {
    me = event.name;
    login.hidden = true;
    chat.hidden = false;
    text.focus();
  }
  if (event.type === "join" && event.name === me) {
    room = event.room;
    roomTitle.textContent = room;
  }
  const element = renderEvent(event);
  if (element) show(element);
}

const connection = new Connection({
  onEvent,
  onStatus: (text) => { status.textContent = text; },
});

login.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const name = new FormData(login).get("name").trim();
  if (name) connection.open(name);
});

composer.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const line = text.value;
  if (!line.trim()) return;
  const ref = nextRef++;
  if (connection.send({ type: "say", room, text: line, ref })) {
    pending.set(ref, { room, text: line });
    text.value = "";
  }
});
