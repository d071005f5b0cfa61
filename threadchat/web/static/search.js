// The search panel: a JSON `search` request (docs/protocol.md, "Search") with the same
// filters as text mode's /search, and its results; a result opens its conversation around
// the message (app.js asks for `history` with `around`). The server decides what a user may
// find; this only asks and lists. Found text is shown as text.

export const SEARCH_LIMIT = 50;
const NARROW = "(max-width: 48rem)"; // style.css's phone width

const resultTime = new Intl.DateTimeFormat([], {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});

// A day picked in a date field ("2026-12-07"), as the RFC 3339 time its local midnight is,
// `days` later.
function dayStart(day, days = 0) {
  const [year, month, date] = day.split("-").map(Number);
  return new Date(year, month - 1, date + days).toISOString();
}

// The request for the panel's fields: {text, room?, from?, after?, before?, limit}. "From"
// and "until" days are inclusive; the server's bounds are exclusive times.
export function searchRequest({ text, room, from, since, until }) {
  const body = { type: "search", text: text.trim(), limit: SEARCH_LIMIT };
  if (room) body.room = room;
  if (from && from.trim()) body.from = from.trim();
  if (since) body.after = new Date(Date.parse(dayStart(since)) - 1).toISOString();
  if (until) body.before = dayStart(until, 1);
  return body;
}

function span(className, text) {
  const element = document.createElement("span");
  element.className = className;
  element.textContent = text;
  return element;
}

// Where a found message was said, as a person reads it.
export function placeOf(event, me, fold) {
  if (event.type !== "private") return `#${event.room}`;
  const fromMe = fold(event.from) === fold(me || "");
  return `private with ${fromMe ? event.to : event.from}`;
}

export class SearchPanel {
  // elements: {panel, form, text, room, from, since, until, status, results, toggle};
  // ask(body) sends a search (false: not connected); open(event) opens a result.
  constructor(elements, { ask, open, rooms, me, fold }) {
    Object.assign(this, elements);
    this.ask = ask;
    this.openResult = open;
    this.rooms = rooms;
    this.me = me;
    this.fold = fold;
    this.form.addEventListener("submit", (submit) => {
      submit.preventDefault();
      this.run();
    });
    this.panel.addEventListener("keydown", (key) => {
      if (key.key === "Escape") {
        key.stopPropagation();
        this.close();
      }
    });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  // Opens the panel, with the fields of a /search line when given.
  show(fields = null) {
    this.fillRooms();
    this.panel.hidden = false;
    this.toggle.setAttribute("aria-expanded", "true");
    if (fields) {
      this.text.value = fields.text || "";
      this.room.value = "";
      if (fields.room) {
        const wanted = this.fold(fields.room);
        for (const option of this.room.options) {
          if (this.fold(option.value) === wanted) this.room.value = option.value;
        }
      }
      this.from.value = fields.from || "";
      this.since.value = fields.since || "";
      this.until.value = fields.until || "";
      if (this.text.value.trim()) this.run();
    }
    this.text.focus();
  }

  close({ returnFocus = true } = {}) {
    this.panel.hidden = true;
    this.toggle.setAttribute("aria-expanded", "false");
    if (returnFocus) this.toggle.focus();
  }

  // The room filter lists the rooms the user is in (the only ones the server searches).
  fillRooms() {
    const chosen = this.room.value;
    const all = document.createElement("option");
    all.value = "";
    all.textContent = "everywhere";
    const options = [all];
    for (const name of this.rooms()) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = `#${name}`;
      options.push(option);
    }
    this.room.replaceChildren(...options);
    this.room.value = options.some((option) => option.value === chosen) ? chosen : "";
  }

  run() {
    const text = this.text.value.trim();
    if (!text) {
      this.status.textContent = "Type words to search for.";
      return;
    }
    const body = searchRequest({
      text, room: this.room.value, from: this.from.value, since: this.since.value,
      until: this.until.value,
    });
    if (!this.ask(body)) {
      this.status.textContent = "Not connected; try again in a moment.";
      return;
    }
    this.status.textContent = "Searching…";
    this.results.replaceChildren();
  }

  // A `search` event.
  showResults(event) {
    const found = event.messages;
    this.status.textContent = found.length === 0 ? `Nothing found for ${event.query}.`
      : found.length >= SEARCH_LIMIT ? `The ${found.length} newest results; more words narrow it.`
      : `${found.length} ${found.length === 1 ? "result" : "results"}, newest first.`;
    this.results.replaceChildren(...found.map((message) => this.resultItem(message)));
  }

  showError(message) {
    this.status.textContent = message;
    this.results.replaceChildren();
  }

  resultItem(message) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "result";
    button.dataset.id = String(message.id);
    const head = document.createElement("span");
    head.className = "result-head";
    const time = document.createElement("time");
    time.dateTime = message.ts;
    time.textContent = resultTime.format(new Date(message.ts));
    head.append(span("place", placeOf(message, this.me(), this.fold)), " ", time);
    const body = document.createElement("span");
    body.className = "result-body";
    body.append(span("sender", message.action ? `* ${message.from}` : message.from), " ");
    // Plain text, no links: a link inside a button would be a control inside a control.
    body.append(span("text", message.text));
    button.append(head, body);
    button.addEventListener("click", () => {
      // On a phone the panel would leave the conversation little room: it gives way.
      if (window.matchMedia(NARROW).matches) this.close({ returnFocus: false });
      this.openResult(message);
    });
    li.append(button);
    return li;
  }
}
