"""What `HELP <topic>` says about each command (Modern IRC's HELP: 704, 705..., 706).

One entry per command of the table (`commands.COMMANDS`), with its syntax first; a test checks
that every command has one.
"""

HELP_TOPICS: dict[str, tuple[str, ...]] = {
    "MONITOR": (
        "MONITOR + <nick>[,<nick>...] | - <nick>[,...] | C | L | S",
        "Be told (730/731) when these nicks come online or go; C clears, L lists, S shows.",
    ),
    "REGISTER": (
        "REGISTER <account|*> <email|*> <password>",
        "Create the account named like your nick and log in to it (no email verification).",
    ),
    "SETNAME": ("SETNAME :<real name>", "Change your real name (setname shows it to others)."),
    "METADATA": (
        "METADATA <*|nick|#channel> GET|LIST|SET|CLEAR|SYNC [<key> [:<value>]]",
        "METADATA * SUB|UNSUB <key>... | METADATA * SUBS",
        "Your own and channels' key/values (draft/metadata-3); subscribers hear of changes.",
    ),
    "RENAME": (
        "RENAME <#channel> <#new-name> [:<reason>]",
        "Rename a channel you moderate; it keeps everything, its history too.",
    ),
    "LINKS": ("LINKS", "The servers of this network: this one."),
    "ADMIN": ("ADMIN", "Who runs this server."),
    "AUTHENTICATE": (
        "AUTHENTICATE <mechanism|data>",
        "SASL login (PLAIN), before registration or after it while not logged in.",
    ),
    "AWAY": ("AWAY [:<message>]", "Mark yourself away with a message, or back without one."),
    "CAP": ("CAP LS [302] | REQ :<caps> | LIST | END", "IRCv3 capability negotiation."),
    "CHATHISTORY": (
        "CHATHISTORY LATEST|BEFORE|AFTER|AROUND|BETWEEN <target> <refs...> <limit>",
        "Read a channel's or a conversation's stored messages (draft/chathistory).",
        "CHATHISTORY TARGETS <timestamp> <timestamp> <limit>: conversations active between.",
    ),
    "MARKREAD": (
        "MARKREAD <target> [timestamp=<RFC 3339 time>]",
        "Set (or, without a time, ask) your account's read marker of a channel or a nick",
        "(draft/read-marker); every client of the account is told.",
    ),
    "SEARCH": (
        "SEARCH text=<words>[;in=<target>][;from=<nick>][;after=<t>][;before=<t>][;limit=<n>]",
        'Search the history you may read (soju.im/search): "a phrase", prefix*, every word.',
    ),
    "HELP": ("HELP [<topic>]", "This help; HELPOP is the same."),
    "BATCH": (
        "BATCH +<ref> draft/multiline <target> | BATCH -<ref>",
        "Send the @batch=<ref> PRIVMSG lines between them as one multiline message.",
    ),
    "REDACT": (
        "REDACT <channel> <msgid> [:<reason>]",
        "Delete a message: your own, or any in a channel you moderate (message-redaction).",
    ),
    "HELPOP": ("HELPOP [<topic>]", "The same as HELP."),
    "INFO": ("INFO", "About this server's software."),
    "INVITE": ("INVITE <nick> <#channel>", "Invite someone to a channel you are in."),
    "ISON": ("ISON <nick> [<nick>...]", "Which of these nicks are online."),
    "JOIN": (
        "JOIN <#channel>[,<#channel>...] [<key>[,<key>...]]",
        "Join channels (a channel is a room of every protocol); JOIN 0 leaves them all.",
    ),
    "KICK": ("KICK <#channel> <nick> [:<reason>]", "Remove someone from a channel (operators)."),
    "KILL": ("KILL <nick> :<reason>", "Disconnect someone (server operators)."),
    "LIST": (
        "LIST [<filters>]",
        "List channels. Filters, comma-separated: #mask or !#mask, >N or <N users,",
        "C>N or C<N minutes since creation, T>N or T<N minutes since the topic was set.",
    ),
    "LUSERS": ("LUSERS", "How many users, operators and channels there are."),
    "MODE": (
        "MODE <#channel> [<+-modes> [<arguments>...]] | MODE <nick> [<+-modes>]",
        "Channel modes: b e I (lists), k key, l limit, i m n t s p (flags), o v (statuses).",
        "User modes: i invisible, w wallops, o operator (only to drop).",
    ),
    "MOTD": ("MOTD", "The message of the day."),
    "NAMES": ("NAMES <#channel>[,<#channel>...]", "Who is in these channels."),
    "NICK": ("NICK <nick>", "Choose or change your nickname."),
    "NOTICE": ("NOTICE <target>[,<target>...] :<text>", "Like PRIVMSG, never answered."),
    "OPER": ("OPER <name> <password>", "Become a server operator."),
    "PART": ("PART <#channel>[,<#channel>...] [:<reason>]", "Leave channels."),
    "PASS": ("PASS <password>", "The server password (or an account's), before NICK/USER."),
    "PING": ("PING <token>", "The server answers PONG <token>."),
    "PONG": ("PONG <token>", "The answer to the server's PING."),
    "PRIVMSG": (
        "PRIVMSG <target>[,<target>...] :<text>",
        "Send a message to channels or people; to NickServ to log in.",
    ),
    "QUIT": ("QUIT [:<reason>]", "Leave the server."),
    "TAGMSG": (
        "@<tags> TAGMSG <target>",
        "Send client tags alone (typing, reactions); needs the message-tags capability.",
    ),
    "TIME": ("TIME", "The server's time."),
    "TOPIC": ("TOPIC <#channel> [:<topic>]", "Show or set a channel's topic."),
    "USER": ("USER <username> 0 * :<realname>", "Your username and real name, at registration."),
    "USERHOST": ("USERHOST <nick> [<nick>...]", "The user@host of up to five nicks."),
    "VERSION": ("VERSION", "The server's version and what it supports."),
    "WALLOPS": ("WALLOPS :<text>", "A message to everyone with user mode +w (server operators)."),
    "WHO": (
        "WHO <#channel|mask> [%<fields>[,<token>]]",
        "Who is in a channel, or whose nick matches a mask; with %fields, WHOX (354).",
    ),
    "VERIFY": (
        "VERIFY <account> <code>",
        "Completes a registration that waits for a code: none here does (no email).",
    ),
    "WHOIS": ("WHOIS <nick>", "Who someone is: name, channels, away, idle time."),
    "WHOWAS": (
        "WHOWAS <nick> [<count>]",
        "Who had a nick before (newest first); a positive count limits the answer.",
    ),
}
