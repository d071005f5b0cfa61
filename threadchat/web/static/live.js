// Messages that live on (docs/protocol.md, "Messages that live on"): reply quotes, reaction
// counts, "(edited)", tombstones, each message's action buttons, the emoji picker, and who is
// typing. The server keeps every rule (who may edit or delete, one reaction per person, the
// typing rate); this draws its events and sends its requests. Text is set as text only.

// The reactions the picker offers; any other one (an IRC user's, a text user's) still counts.
export const COMMON_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "👀", "🙏"];

// Typing (IRCv3 typing, as the server relays it): a notice at most every THROTTLE ms (the
// server refuses more than one per 3 s; the margin is for one notice taking longer on the
// way than the next), `paused` once the user stopped typing for PAUSE_AFTER ms, and
// someone else's notice forgotten after its state's time.
export const TYPING_THROTTLE = 3300;
export const PAUSE_AFTER = 5000;
export const TYPING_EXPIRY = { active: 6000, paused: 30000 };

// -- reply quotes ---------------------------------------------------------------------------

const QUOTE_LENGTH = 40;

// The first words of a message, as the server quotes a reply's original (`reply.text`): its
// first line, cut near 40 characters.
export function quoteOf(text) {
  const first = text.split("\n", 1)[0];
  if (first.length <= QUOTE_LENGTH && first.length === text.length) return first;
  if (first.length <= QUOTE_LENGTH) return `${first}…`;
  const cut = first.slice(0, QUOTE_LENGTH);
  const space = cut.lastIndexOf(" ");
  return `${space > QUOTE_LENGTH / 2 ? cut.slice(0, space) : cut}…`;
}

// -- reactions --------------------------------------------------------------------------------

// A `react` event applied to a message's `reactions` ([{reaction, from, count}], as history
// gives them): a new list, in the order each reaction was first given.
export function applyReaction(reactions, { reaction, from, on }, fold) {
  const list = (reactions || []).map((item) => ({ ...item, from: [...item.from] }));
  let item = list.find((candidate) => candidate.reaction === reaction);
  const who = fold(from);
  if (on) {
    if (!item) {
      item = { reaction, from: [], count: 0 };
      list.push(item);
    }
    if (!item.from.some((name) => fold(name) === who)) item.from.push(from);
  } else if (item) {
    item.from = item.from.filter((name) => fold(name) !== who);
  }
  for (const each of list) each.count = each.from.length;
  return list.filter((each) => each.count > 0);
}

// -- typing ---------------------------------------------------------------------------------

// The line under the log: "alice is typing…", "alice and bob are typing…".
export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  if (names.length === 3) return `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  return "Several people are typing…";
}

// Who is typing where: conversation key -> Map(folded name -> {name, timer}).
export class TypingBoard {
  constructor(onChange, fold) {
    this.onChange = onChange; // (key) => the line of conversation `key` changed
    this.fold = fold;
    this.byConversation = new Map();
  }

  note(key, name, state) {
    let people = this.byConversation.get(key);
    if (!people) {
      people = new Map();
      this.byConversation.set(key, people);
    }
    const who = this.fold(name);
    const known = people.get(who);
    if (known) window.clearTimeout(known.timer);
    if (state === "done" || !(state in TYPING_EXPIRY)) {
      if (!known) return;
      people.delete(who);
    } else {
      const timer = window.setTimeout(() => this.stop(key, name), TYPING_EXPIRY[state]);
      people.set(who, { name, timer });
    }
    this.onChange(key);
  }

  // Their message came, or they left: not typing any more.
  stop(key, name) {
    const people = this.byConversation.get(key);
    const who = this.fold(name);
    if (!people || !people.has(who)) return;
    window.clearTimeout(people.get(who).timer);
    people.delete(who);
    this.onChange(key);
  }

  names(key) {
    const people = this.byConversation.get(key);
    return people ? [...people.values()].map((person) => person.name) : [];
  }

  clear() {
    for (const people of this.byConversation.values()) {
      for (const person of people.values()) window.clearTimeout(person.timer);
    }
    this.byConversation.clear();
  }
}

// Our own notices for the conversation being written in: `active` while typing (at most one
// per TYPING_THROTTLE), `paused` after PAUSE_AFTER without a key, `done` when the text is
// sent or emptied or the user goes elsewhere. `send(key, state)` sends one.
export class TypingSender {
  constructor(send, now = () => Date.now()) {
    this.send = send;
    this.now = now;
    this.key = null; // where our last notice went
    this.state = "done";
    // When the last `active` or `paused` went: the server counts those against its rate.
    this.noticeAt = Number.NEGATIVE_INFINITY;
    this.pauseTimer = null;
    this.laterTimer = null; // an `active` that was too soon, sent when the server allows
  }

  // The composer changed: `text` is what it holds now, for conversation `key`.
  typed(key, text) {
    if (this.key !== null && key !== this.key) this.done();
    if (!text.trim() || text.startsWith("/")) {
      this.done();
      return;
    }
    this.key = key;
    window.clearTimeout(this.pauseTimer);
    this.pauseTimer = window.setTimeout(() => this.pause(), PAUSE_AFTER);
    if (this.state === "active" && this.now() - this.noticeAt < TYPING_THROTTLE) return;
    const wait = this.noticeAt + TYPING_THROTTLE - this.now();
    if (wait <= 0) {
      this.emit("active");
    } else if (this.laterTimer === null) {
      // Too soon for the server (it would refuse): sent once it is not, if still typing.
      this.laterTimer = window.setTimeout(() => {
        this.laterTimer = null;
        if (this.key !== null && this.state !== "active") this.emit("active");
      }, wait);
    }
  }

  // The server refused our `active` as too soon (one notice took longer on the way than the
  // next): sent again once it cannot be, if still typing.
  refused(state) {
    if (state !== "active" || this.key === null || this.state !== "active") return;
    this.state = "paused"; // as far as the others know, not typing
    this.noticeAt = this.now();
    window.clearTimeout(this.laterTimer);
    this.laterTimer = window.setTimeout(() => {
      this.laterTimer = null;
      if (this.key !== null && this.state !== "active") this.emit("active");
    }, TYPING_THROTTLE);
  }

  pause() {
    this.pauseTimer = null;
    if (this.state !== "active") return;
    if (this.now() - this.noticeAt < TYPING_THROTTLE) {
      // Too soon for the server: paused a little later.
      this.pauseTimer = window.setTimeout(() => this.pause(), TYPING_THROTTLE);
      return;
    }
    this.emit("paused");
  }

  // Sent, emptied, or gone elsewhere. The server lets one `done` through after a notice.
  done() {
    window.clearTimeout(this.pauseTimer);
    window.clearTimeout(this.laterTimer);
    this.pauseTimer = null;
    this.laterTimer = null;
    if (this.state !== "done" && this.key !== null) this.emit("done");
    this.key = null;
  }

  // The link was lost: whatever we said is forgotten by the server.
  reset() {
    window.clearTimeout(this.pauseTimer);
    window.clearTimeout(this.laterTimer);
    this.pauseTimer = null;
    this.laterTimer = null;
    this.key = null;
    this.state = "done";
    this.noticeAt = Number.NEGATIVE_INFINITY;
  }

  emit(state) {
    this.state = state;
    if (state !== "done") this.noticeAt = this.now();
    this.send(this.key, state);
  }
}

// -- drawing a message's live parts -----------------------------------------------------------

function button(className, text, label, action) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  if (label) {
    element.setAttribute("aria-label", label);
    element.title = label;
  }
  element.dataset.action = action; // to give the focus back when the message is redrawn
  return element;
}

// A render.js decorator: draws what `entry.event` carries of replies, edits, deletions and
// reactions, and the message's buttons. `actions` has the page's handlers: me(), fold(name),
// jump(entry), reply(entry), react(entry, reaction, on), pick(entry, anchor), edit(entry),
// remove(entry), and canAct(entry) (the message has an id and is not a notice).
export function liveDecorator(actions) {
  return (li, entry) => {
    const { event } = entry;
    const body = li.querySelector(".body");
    const text = li.querySelector(".text");
    if (event.reply && event.reply_to) {
      // Read as what it shows ("↪ bob: first words"); the title says what a click does.
      const quote = button("reply-quote", "", null, "quote");
      quote.title = `Go to ${event.reply.from}'s message`;
      quote.append("↪ ");
      const who = document.createElement("span");
      who.className = "quote-sender";
      who.textContent = event.reply.from;
      quote.append(who, ` ${event.reply.text}`);
      quote.addEventListener("click", () => actions.jump(entry));
      li.classList.add("reply");
      li.prepend(quote);
    }
    if (event.deleted) {
      li.classList.add("deleted");
      text.replaceChildren("message deleted");
      return; // a tombstone has no reactions and nothing to act on
    }
    if (event.edited) {
      const mark = document.createElement("span");
      mark.className = "edited";
      mark.textContent = " (edited)";
      body.append(mark);
    }
    const me = actions.me();
    const reactions = event.reactions || [];
    if (reactions.length) {
      const bar = document.createElement("div");
      bar.className = "reactions";
      for (const { reaction, from, count } of reactions) {
        const mine = from.some((name) => actions.fold(name) === actions.fold(me || ""));
        const label = `${reaction} ${count}: ${from.join(", ")}` +
          (mine ? " (click to take yours back)" : " (click to add yours)");
        const chip = button("reaction", "", label, `reaction:${reaction}`);
        chip.setAttribute("aria-pressed", String(mine));
        const emoji = document.createElement("span");
        emoji.className = "emoji";
        emoji.textContent = reaction;
        const number = document.createElement("span");
        number.className = "count";
        number.textContent = String(count);
        chip.append(emoji, number);
        chip.addEventListener("click", () => actions.react(entry, reaction, !mine));
        bar.append(chip);
      }
      body.append(bar);
    }
    if (!actions.canAct(entry)) return;
    li.classList.add("actionable");
    const tools = document.createElement("span");
    tools.className = "message-actions";
    const reply = button("tool", "Reply", `Reply to ${event.from}`, "reply");
    reply.addEventListener("click", () => actions.reply(entry));
    const react = button("tool", "React", "Add a reaction", "react");
    react.setAttribute("aria-haspopup", "true");
    react.addEventListener("click", () => actions.pick(entry, react));
    tools.append(reply, react);
    if (entry.own) {
      const edit = button("tool", "Edit", "Edit your message", "edit");
      edit.addEventListener("click", () => actions.edit(entry));
      const remove = button("tool", "Delete", "Delete your message", "delete");
      remove.addEventListener("click", () => actions.remove(entry));
      tools.append(edit, remove);
    }
    li.append(tools);
  };
}

// The emoji picker: one small panel, opened under a message's React button.
export class ReactionPicker {
  constructor(onPick) {
    this.onPick = onPick; // (entry, reaction)
    this.entry = null;
    this.anchor = null;
    this.panel = document.createElement("div");
    this.panel.className = "reaction-picker";
    this.panel.setAttribute("role", "group");
    this.panel.setAttribute("aria-label", "Pick a reaction");
    this.panel.hidden = true;
    for (const reaction of COMMON_REACTIONS) {
      const choice = button("pick", reaction, `React with ${reaction}`, `pick:${reaction}`);
      choice.addEventListener("click", () => {
        const { entry } = this;
        this.close();
        if (entry) this.onPick(entry, reaction);
      });
      this.panel.append(choice);
    }
    this.panel.addEventListener("keydown", (key) => {
      if (key.key === "Escape") {
        key.stopPropagation();
        this.close();
      }
    });
    document.addEventListener("click", (click) => {
      if (this.panel.hidden) return;
      if (this.panel.contains(click.target) || this.anchor?.contains(click.target)) return;
      this.close({ focusBack: false });
    });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  toggle(entry, anchor) {
    if (this.isOpen && this.entry === entry) {
      this.close();
      return;
    }
    this.entry = entry;
    this.anchor = anchor;
    anchor.closest("li").append(this.panel);
    anchor.setAttribute("aria-expanded", "true");
    this.panel.hidden = false;
    this.panel.querySelector("button").focus();
  }

  close({ focusBack = true } = {}) {
    if (this.panel.hidden) return;
    this.panel.hidden = true;
    const { anchor } = this;
    this.entry = null;
    this.anchor = null;
    if (anchor) {
      anchor.setAttribute("aria-expanded", "false");
      if (focusBack && anchor.isConnected) anchor.focus();
    }
  }
}
