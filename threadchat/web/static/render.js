// Events as list items. Everything a user wrote goes in with textContent, never innerHTML:
// other people's text is shown as text, whatever it contains.

function item(className, ts) {
  const li = document.createElement("li");
  if (className) li.className = className;
  if (ts) {
    const time = document.createElement("time");
    time.dateTime = ts;
    const when = new Date(ts);
    time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    li.append(time);
  }
  return li;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

function chat(event, className, who) {
  const li = item(className, event.ts);
  if (event.action) {
    li.append(span("action", `* ${event.from} ${event.text}`));
  } else {
    li.append(span("sender", `${who}:`), span("text", event.text));
  }
  return li;
}

function info(text, ts, className = "info") {
  const li = item(className, ts);
  li.append(span("text", text));
  return li;
}

// The list item for one server event, or null for events this page does not show.
export function renderEvent(event) {
  switch (event.type) {
    case "message":
      return chat(event, "message", event.from);
    case "private":
      return chat(event, "private", `${event.from} → ${event.to}`);
    case "join":
      return info(`${event.name} joined ${event.room}`, event.ts);
    case "leave":
      return info(`${event.name} left ${event.room}${event.reason ? ` (${event.reason})` : ""}`, event.ts);
    case "quit":
      return info(`${event.name} quit (${event.reason})`, event.ts);
    case "nick":
      return info(`${event.old} is now known as ${event.new}`, event.ts);
    case "topic":
      return info(event.topic ? `topic of ${event.room}: ${event.topic}` : `${event.room} has no topic`, event.ts);
    case "who":
      return info(`in ${event.room}: ${event.members.join(", ")}`, event.ts);
    case "welcome":
      return info(`welcome to ${event.server}, ${event.name}`, event.ts);
    case "notice":
      return info(event.text, event.ts);
    case "error":
      return info(event.message, event.ts, "error");
    default:
      return null;
  }
}
