"""Mode changes written as letters (`+o-v` and its arguments), given a letter table.

IRC writes every mode change this way, and the JSON protocol keeps the same form in the
`changes`/`args` fields of its `mode` event for clients written before modes were data. Each
protocol keeps its own table (the protocols stand alone); the writing is shared here.
"""

from collections.abc import Iterable, Mapping

from threadchat.core.modes import Mode, ModeChange, RoomSetting


def letters_and_args(
    changes: Iterable[ModeChange], letter_of: Mapping[Mode, str]
) -> tuple[str, list[str]]:
    """(`"+o-v"`, `["bob", "tom"]`) for `changes`. A removed key has the argument `*`, as IRC
    servers send it; a mode the table has no letter for is left out (a client that reads
    letters would not know it)."""
    text, sign = "", ""
    args: list[str] = []
    for change in changes:
        letter = letter_of.get(change.mode)
        if letter is None:
            continue
        wanted = "+" if change.add else "-"
        if wanted != sign:
            text += wanted
            sign = wanted
        text += letter
        if change.arg is not None:
            args.append(change.arg)
        elif change.mode is RoomSetting.KEY and not change.add:
            args.append("*")
    return text, args
