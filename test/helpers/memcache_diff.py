"""Exercises memcached's text protocol through pymemcache (and a raw socket where pymemcache
cannot send a line, such as bare \\n endings or keys with control bytes) and prints one JSON
array of [label, result] rows. test/integration/memcache-diff.test.ts runs it against memcached 1.6 and
against statecast's front end and compares the rows.

Left out on purpose, as they legitimately differ: cas unique values themselves (gets' second field:
only how cas treats them is compared), the
contents of stats, and the VERSION text. Usage: memcache_diff.py HOST PORT
"""
import json
import socket
import sys
import time

from pymemcache.client.base import Client

HOST, PORT = sys.argv[1], int(sys.argv[2])
rows = []


def row(label, fn):
    try:
        v = fn()
    except Exception as e:  # the error class and text are part of what is compared
        v = "EXC %s: %s" % (type(e).__name__, e)
    rows.append([label, plain(v)])


def plain(v):
    if isinstance(v, bytes):
        return v.decode("latin1")
    if isinstance(v, dict):
        return {plain(k): plain(x) for k, x in sorted(v.items())}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


SENTINEL = b"set zz-sentinel 0 0 8\r\nSENTINEL\r\nget zz-sentinel\r\n"


def raw(label, data, wait_for=None):
    """Sends raw bytes on a fresh connection; reads until the reply ends with wait_for (by
    default: the reply to a sentinel get sent last), or EOF."""
    if wait_for is None:
        data += SENTINEL
        wait_for = b"SENTINEL\r\nEND\r\n"
    s = socket.create_connection((HOST, PORT))
    s.settimeout(10)
    s.sendall(data)
    out = b""
    try:
        while not out.endswith(wait_for):
            b = s.recv(65536)
            if not b:
                out += b"<EOF>"
                break
            out += b
    except socket.timeout:
        out += b"<TIMEOUT>"
    s.close()
    rows.append([label, out.decode("latin1")])


c = Client((HOST, PORT), default_noreply=False, connect_timeout=10, timeout=10)

# Storage commands.
row("set", lambda: c.set("a", b"1", flags=5))
row("get", lambda: c.get("a"))
row("get missing", lambda: c.get("missing"))
row("add existing", lambda: c.add("a", b"2"))
row("add new", lambda: c.add("b", b"bee"))
row("replace existing", lambda: c.replace("b", b"B"))
row("replace missing", lambda: c.replace("nope", b"x"))
row("append", lambda: c.append("b", b"-tail"))
row("prepend", lambda: c.prepend("b", b"head-"))
row("append missing", lambda: c.append("nope", b"x"))
row("prepend missing", lambda: c.prepend("nope", b"x"))
row("get after append", lambda: c.get("b"))


def raw_flags(key):
    s = socket.create_connection((HOST, PORT))
    s.sendall(b"append " + key.encode() + b" 9 0 1\r\nz\r\nget " + key.encode() + b"\r\n")
    out = b""
    while not out.endswith(b"END\r\n"):
        out += s.recv(65536)
    s.close()
    return out


row("flags kept by append", lambda: raw_flags("a"))
row("get_many", lambda: c.get_many(["a", "b", "missing", "a"]))
row("gets value", lambda: c.gets("b")[0])
row("gets missing", lambda: c.gets("missing"))


def cas_flow():
    """cas with the unique a gets reported: stored once, refused after another write."""
    c.set("c", b"1")
    _, unique = c.gets("c")
    first = c.cas("c", b"2", unique)
    again = c.cas("c", b"3", unique)
    _, newer = c.gets("c")
    return [first, again, c.get("c"), newer != unique, c.cas("c", b"4", newer), c.get("c"), c.cas("missing", b"x", unique)]


row("cas flow", cas_flow)
raw("cas forms", b"cas c 0 0 1\r\nx\r\ncas c 0 0 1 abc\r\nx\r\ncas c 0 0 1 1 noreply\r\nx\r\ncas zz-none 0 0 1 1\r\ny\r\n")

# incr/decr: numbers, wrap at 2^64, floor at 0, in-place rewrite padded with spaces.
row("set n", lambda: c.set("n", b"10"))
row("decr 1", lambda: c.decr("n", 1))
row("get n after decr", lambda: c.get("n"))
row("incr 5", lambda: c.incr("n", 5))
row("get n after incr", lambda: c.get("n"))
row("incr to 100", lambda: c.incr("n", 86))
row("get n grown", lambda: c.get("n"))
row("decr below 0", lambda: c.decr("n", 1000))
row("incr wraps", lambda: (c.set("w", b"18446744073709551615"), c.incr("w", 2))[1])
row("incr missing", lambda: c.incr("missing", 1))
row("decr missing", lambda: c.decr("missing", 1))
row("incr non-numeric", lambda: c.incr("b", 1))
row("incr spaces", lambda: (c.set("sp", b" 7 x"), c.incr("sp", 1), c.get("sp"))[1:])
raw("incr bad delta", b"incr n abc\r\nincr n -1\r\nincr n 18446744073709551616\r\nincr n 18446744073709551615\r\n")
raw("incr usage", b"incr n\r\ndecr\r\nincr n 1 2 3\r\n")

# delete and touch.
row("delete", lambda: c.delete("b"))
row("delete missing", lambda: c.delete("b"))
row("get deleted", lambda: c.get("b"))
raw("delete forms", b"set d 0 0 1\r\nx\r\ndelete d 0\r\ndelete d 0 noreply\r\ndelete d 1\r\ndelete d x noreply\r\ndelete\r\ndelete d 0 noreply x\r\nget d\r\n")
row("touch", lambda: c.touch("a", 100))
row("touch missing", lambda: c.touch("missing", 100))
raw("gat", b"set g1 3 0 2\r\nhi\r\nset g2 0 0 1\r\nx\r\ngat 100 g1 missing g2\r\ngat -1 g2\r\nget g2\r\ngat abc g1\r\ngat 100\r\ngat\r\nget g1\r\n")

# Expiry as memcached reads it: 0 none, up to 30 days relative, beyond that absolute Unix time.
now = int(time.time())
row("exp 0", lambda: (c.set("e0", b"x", expire=0), c.get("e0"))[1])
row("exp relative", lambda: (c.set("e1", b"x", expire=100), c.get("e1"))[1])
row("exp 30 days", lambda: (c.set("e2", b"x", expire=2592000), c.get("e2"))[1])
row("exp absolute future", lambda: (c.set("e3", b"x", expire=now + 200), c.get("e3"))[1])
row("exp absolute past", lambda: (c.set("e4", b"x", expire=now - 100), c.get("e4"))[1])
row("exp 30 days + 1 (1970)", lambda: (c.set("e5", b"x", expire=2592001), c.get("e5"))[1])
row("exp negative", lambda: (c.set("e6", b"x", expire=-1), c.get("e6"))[1])
row("exp negative replaces", lambda: (c.set("e7", b"x"), c.set("e7", b"y", expire=-5), c.get("e7"))[2])
row("touch negative", lambda: (c.set("e8", b"x"), c.touch("e8", -1), c.get("e8"))[1:])
row("touch past", lambda: (c.set("e9", b"x"), c.touch("e9", now - 100), c.get("e9"))[1:])
raw("huge exptimes", b"touch a " + b"9" * 320 + b"\r\ntouch a -" + b"9" * 320 + b"\r\nset h 0 " + b"9" * 320 + b" 1\r\nz\r\nset h 0 99999999999999999999 1\r\nz\r\nset h 0 0 " + b"9" * 30 + b"\r\nget a h\r\n")

# noreply everywhere: nothing comes back until the get.
for cmd, fn in [
    ("set", lambda: c.set("q", b"1", noreply=True)),
    ("add", lambda: c.add("q", b"2", noreply=True)),
    ("replace", lambda: c.replace("q", b"3", noreply=True)),
    ("append", lambda: c.append("q", b"4", noreply=True)),
    ("prepend", lambda: c.prepend("q", b"5", noreply=True)),
    ("incr", lambda: c.incr("q", 1, noreply=True)),
    ("decr", lambda: c.decr("q", 2, noreply=True)),
    ("touch", lambda: c.touch("q", 50, noreply=True)),
]:
    row("noreply " + cmd, fn)
row("get after noreply", lambda: c.get("q"))
row("delete noreply", lambda: (c.delete("q", noreply=True), c.get("q")))
raw(
    "raw noreply",
    b"set r 0 0 1 noreply\r\n1\r\nadd r 0 0 1 noreply\r\n2\r\nappend r 0 0 1 noreply\r\ny\r\nprepend nope 0 0 1 noreply\r\nz\r\n"
    b"incr r 1 noreply\r\nincr r abc noreply\r\ntouch r 10 noreply\r\ntouch nope 10 noreply\r\ndelete nope noreply\r\nverbosity 1 noreply\r\n"
    b"set r2 0 0 1 noreply\r\nxx\r\nflush_all noreply\r\nget r\r\n",
    b"END\r\n",
)

# Errors, unknown commands and data blocks.
raw("unknown", b"bogus\r\nbogus noreply\r\nGET a\r\n\r\ncas\r\nget a\r\n")
raw("bad set lines", b"set k notanumber 0 1\r\nx\r\nset k 0 0 -1\r\nset k 0 0 1 2 3\r\nset k 0 0\r\nset k -1 0 1\r\nz\r\nset k 4294967296 0 1\r\nz\r\nset k 0 0 1 bogus\r\nz\r\nget k\r\n")
raw("bad data chunk", b"set k 0 0 1\r\nzz\r\nget k\r\nset k 0 0 3\r\nzz\r\nget k\r\n")
raw("key of 250 and 251 bytes", b"set " + b"k" * 250 + b" 0 0 1\r\nz\r\nget " + b"k" * 250 + b"\r\nset " + b"k" * 251 + b" 0 0 1\r\nz\r\n")
raw("get of a 251-byte key", b"get " + b"k" * 251 + b"\r\n")
raw("multi-get with a 251-byte key", b"get a " + b"k" * 251 + b" a\r\n")
raw("keys with control bytes", b"set a\x01b 0 0 1\r\n1\r\nset a\tb 0 0 1\r\n2\r\nset a\x7fb 0 0 1\r\n3\r\nset a\rb 0 0 1\r\n4\r\nget a\x01b a\tb a\x7fb a\rb\r\n")
raw("bare newline lines", b"set nl 0 0 2\nhi\r\nget nl\ndelete nl\nget nl\nset nl 0 0 2\nhi\n\r\n")
raw("leading and repeated spaces", b"  get   a  \r\nset  sp2  0  0  1 \r\nz\r\nget sp2\r\n")
raw("verbosity", b"verbosity 1\r\nverbosity\r\nverbosity noreply\r\nverbosity 1 2 3\r\nverbosity x\r\n")
raw("stats reset", b"stats reset\r\n")
raw("stats unknown", b"stats bogus\r\n")
raw("quit", b"get a\r\nquit\r\nget a\r\n", b"<EOF>")

# A refused oversized set removes the old value (both servers: 1 MiB items by default).
big = b"v" * (1024 * 1024 + 100)
row("set before oversized", lambda: c.set("big", b"old"))
row("oversized set", lambda: c.set("big", big))
row("get after oversized", lambda: c.get("big"))
row("oversized add keeps", lambda: (c.set("big2", b"old"), c.add("big2", big), c.get("big2"))[1:])

# Long multi-gets, one line of 400 keys of 200 bytes (80 KB), pipelined through pymemcache.
keys = ["long-%03d-%s" % (i, "k" * 191) for i in range(400)]
row("set_many", lambda: c.set_many({k: b"%d" % i for i, k in enumerate(keys) if i % 7 == 0}))
row("get_many 400 keys", lambda: c.get_many(keys))
raw("pipelined", b"".join(b"set p%d 0 0 1\r\n%d\r\n" % (i, i % 10) for i in range(200)) + b"get " + b" ".join(b"p%d" % i for i in range(0, 200, 3)) + b"\r\n" + b"".join(b"incr p%d 1\r\n" % i for i in range(0, 200, 5)))

# flush_all (statecast: with memcacheFlushAll = true) and stats that parse.
row("stats parse", lambda: sorted(k for k in c.stats() if k in (b"pid", b"version", b"curr_connections", b"curr_items", b"limit_maxbytes")))
row("flush_all", lambda: c.flush_all())
row("get after flush_all", lambda: c.get_many(["a", "n", "e0"]))
raw("flush_all forms", b"set f 0 0 1\r\nx\r\nflush_all 0\r\nget f\r\nflush_all abc\r\nflush_all 0 noreply\r\nflush_all 1 2 3\r\nget f\r\n")
row("version parses", lambda: c.version().decode("latin1").split(".")[0] == "1")
c.quit()

json.dump(rows, sys.stdout, indent=0)
