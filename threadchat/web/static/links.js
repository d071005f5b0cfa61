// Text with clickable links, built from DOM nodes: the text stays text (textContent), and
// only http: and https: addresses become links, opened in a new tab without access back to
// this page (rel=noopener noreferrer). A "javascript:" or "data:" address stays plain text.

const URL_PATTERN = /\bhttps?:\/\/[^\s<>"'`]+/giu;
// Closing punctuation at the end of an address is usually the sentence's, not the address's.
const TRAILING = /[.,;:!?)\]}'"»”’]+$/u;

export function safeHref(candidate) {
  let url;
  try {
    url = new URL(candidate);
  } catch {
    return null;
  }
  return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
}

// Append `text` to `parent`: text nodes, and an <a> for each web address in it.
export function appendLinkified(parent, text) {
  let last = 0;
  for (const match of text.matchAll(URL_PATTERN)) {
    let address = match[0];
    const trailing = address.match(TRAILING);
    // Keep a closing parenthesis that closes one opened inside the address (wiki links).
    if (trailing && !(trailing[0] === ")" && address.includes("("))) {
      address = address.slice(0, -trailing[0].length);
    }
    const href = safeHref(address);
    if (!href) continue;
    if (match.index > last) parent.append(text.slice(last, match.index));
    const link = document.createElement("a");
    link.href = href;
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = address;
    parent.append(link);
    last = match.index + address.length;
  }
  if (last < text.length) parent.append(text.slice(last));
}
