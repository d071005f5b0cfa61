"""Limits the IRC side announces (ISUPPORT, see `registration.send_isupport`) and enforces.

They keep every reply that repeats a client's words within IRC's 512 bytes.
"""

from threadchat.core import names

# Channels one user may be in (CHANLIMIT): every join costs fan-out work on each message.
MAX_CHANNELS = 50
# Targets per PRIVMSG/NOTICE (TARGMAX): enough for real use, too few to spam efficiently.
MAX_TARGETS = 4
# Nicks per KICK (TARGMAX): a few troublemakers at once, not a whole room.
MAX_KICK_TARGETS = 4
# Mode changes with a parameter per MODE command (MODES), as most servers allow.
MAX_MODES = 6
KEYLEN = 23
AWAYLEN = 200
KICKLEN = 300
USERLEN = 10
REALNAME_MAX = names.REALNAME_MAX
BANMASK_MAX = 100
# What LIST filters on (ELIST, see `channels.ListFilter`): Creation time, Masks, Negated
# masks, Topic time and User counts.
ELIST = "CMNTU"
