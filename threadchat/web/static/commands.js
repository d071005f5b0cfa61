// The /commands of the native text protocol (docs/protocol.md), turned into JSON requests.
// The server decides everything; this only translates a line into a request.

// "#dev" and "dev" both name room dev, as in text mode.
function roomName(word) {
  return word.startsWith("#") ? word.slice(1) : word;
}

function rest(words, from) {
  return words.slice(from).join(" ");
}

// [ROOM] as a first optional argument: "#dev" (or a word that is a joined room's name when
// the command allows it), else the current room.
function optionalRoom(words, current) {
  if (words[1] && words[1].startsWith("#")) return { room: roomName(words[1]), next: 2 };
  return { room: current, next: 1 };
}

const MODERATION = new Set(["op", "deop", "kick", "ban", "unban", "mute", "unmute"]);

export const HELP = [
  "text: sent to this conversation; //text sends /text",
  "/join ROOM · /leave [ROOM] [reason] · /rooms · /who [ROOM] · /topic [#ROOM] [text]",
  "/msg NICK text · /query NICK (open a private conversation) · /me action · /nick NEW",
  "/history [N] · /whois NICK · /away [message] · /realname NAME · /invite NICK [#ROOM]",
  "/register PASSWORD · /login NAME PASSWORD · /password OLD NEW",
  "/op /deop /kick /ban /unban /mute /unmute [#ROOM] NICK · /topiclock [#ROOM] on|off",
  "/quit [reason] · /help (the server's list too)",
  "keys: Alt+↑ / Alt+↓ switch conversations, Esc returns to the message box",
];

// What a line typed in the composer does. `conversation` is {kind: "room"|"private", name}.
// Returns {say, action} (to the conversation), {request}, {open: NICK, say?}, {local: WHAT}
// or {error: TEXT}.
export function parseLine(line, conversation) {
  if (!line.startsWith("/")) return { say: line, action: false };
  if (line.startsWith("//")) return { say: line.slice(1), action: false };
  const words = line.slice(1).split(/ +/u);
  const command = words[0].toLowerCase();
  const current = conversation.kind === "room" ? conversation.name : null;
  const needRoom = (room) => room || "join a room first, or name one: #ROOM";
  switch (command) {
    case "me": {
      const text = rest(words, 1);
      return text ? { say: text, action: true } : { error: "usage: /me action" };
    }
    case "join":
    case "j":
      return words[1] ? { request: { type: "join", room: roomName(words[1]) } }
                      : { error: "usage: /join ROOM" };
    case "leave":
    case "part": {
      const { room, next } = optionalRoom(words, current);
      if (!room) return conversation.kind === "private" ? { local: "close" } : { error: needRoom() };
      const reason = rest(words, next);
      return { request: { type: "leave", room, ...(reason ? { reason } : {}) } };
    }
    case "close":
      return conversation.kind === "private" ? { local: "close" } : parseLine("/leave", conversation);
    case "rooms":
    case "list":
      return { request: { type: "rooms" } };
    case "who":
    case "names": {
      const room = words[1] ? roomName(words[1]) : current;
      return room ? { request: { type: "who", room } } : { error: needRoom() };
    }
    case "msg":
    case "query": {
      if (!words[1]) return { error: `usage: /${command} NICK text` };
      const text = rest(words, 2);
      return { open: words[1], ...(text ? { say: text } : {}) };
    }
    case "nick":
      return words[1] ? { request: { type: "nick", name: words[1] } } : { error: "usage: /nick NEW" };
    case "topic": {
      const { room, next } = optionalRoom(words, current);
      if (!room) return { error: needRoom() };
      const topic = rest(words, next);
      return { request: { type: "topic", room, ...(topic ? { topic } : {}) } };
    }
    case "quit":
      return { local: "quit", reason: rest(words, 1) };
    case "help":
      return { local: "help" };
    case "clear":
      return { local: "clear" };
    case "history": {
      const limit = Number.parseInt(words[words.length - 1], 10);
      return { local: "history", limit: Number.isFinite(limit) ? limit : 50 };
    }
    case "register":
      return words[1] ? { request: { type: "register", password: rest(words, 1) } }
                      : { error: "usage: /register PASSWORD" };
    case "login":
      return words[2] ? { request: { type: "login", name: words[1], password: rest(words, 2) } }
                      : { error: "usage: /login NAME PASSWORD" };
    case "password":
      return words[2] ? { request: { type: "password", old: words[1], new: words[2] } }
                      : { error: "usage: /password OLD NEW" };
    case "topiclock": {
      const { room, next } = optionalRoom(words, current);
      const setting = (words[next] || "on").toLowerCase();
      if (!room) return { error: needRoom() };
      if (setting !== "on" && setting !== "off") return { error: "usage: /topiclock [#ROOM] on|off" };
      return { request: { type: "topiclock", room, on: setting === "on" } };
    }
    case "invite": {
      if (!words[1]) return { error: "usage: /invite NICK [#ROOM]" };
      const room = words[2] ? roomName(words[2]) : current;
      return room ? { request: { type: "invite", name: words[1], room } } : { error: needRoom() };
    }
    case "away": {
      const message = rest(words, 1);
      return { request: { type: "away", ...(message ? { message } : {}) } };
    }
    case "whois":
      return words[1] ? { request: { type: "whois", name: words[1] } } : { error: "usage: /whois NICK" };
    case "realname":
      return words[1] ? { request: { type: "realname", realname: rest(words, 1) } }
                      : { error: "usage: /realname NAME" };
    default:
      break;
  }
  if (MODERATION.has(command)) {
    const { room, next } = optionalRoom(words, current);
    if (!room) return { error: needRoom() };
    if (!words[next]) return { error: `usage: /${command} [#ROOM] NICK` };
    const request = { type: command, room, name: words[next] };
    const reason = rest(words, next + 1);
    if (command === "kick" && reason) request.reason = reason;
    return { request };
  }
  return { error: `unknown command /${command}; /help lists them` };
}
