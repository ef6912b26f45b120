"""Concurrent conditional writes through pymemcache, one client per host and thread, for
test/integration/conditional.test.ts. Prints one JSON object of outcome counts; the test judges.

Usage:
  conditional_rounds.py add ROUNDS TAG PORT...   each round, one add of a fresh key from every
                                                 port at once (a barrier releases them together)
  conditional_rounds.py incr TOTAL THREADS PORT... TOTAL incr of one counter, split over the
                                                 ports, THREADS connections per port, all at once
  conditional_rounds.py cas ROUNDS TAG PORT PORT PORT  each round, set on one host, gets on the
                                                 next, then cas with that unique from the 2nd and
                                                 3rd port at once
"""

import json
import sys
import threading

from pymemcache.client.base import Client

HOST = "127.0.0.1"


def client(port):
    # Replies wait, no retries, and a timeout no loaded machine reaches: a wrong answer shows as
    # itself, and an error is counted, not hidden.
    return Client((HOST, port), default_noreply=False, connect_timeout=30, timeout=60)


def describe(e):
    return f"{type(e).__name__}: {e}"


def concurrently(fns):
    """Runs each fn on its own thread, released together by a barrier; gives their results."""
    results = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def run(i):
        barrier.wait()
        try:
            results[i] = ("ok", fns[i]())
        except Exception as e:  # pylint: disable=broad-except
            results[i] = ("error", describe(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


class Workers:
    """One long-lived thread per client; each round hands every thread one call, released at once."""

    def __init__(self, clients):
        self.clients = clients
        self.n = len(clients)
        self.start = threading.Barrier(self.n + 1)
        self.done = threading.Barrier(self.n + 1)
        self.calls = [None] * self.n
        self.results = [None] * self.n
        self.stop = False
        self.threads = [threading.Thread(target=self._loop, args=(i,), daemon=True) for i in range(self.n)]
        for th in self.threads:
            th.start()

    def _loop(self, i):
        while True:
            self.start.wait()
            if self.stop:
                return
            try:
                self.results[i] = ("ok", self.calls[i](self.clients[i]))
            except Exception as e:  # pylint: disable=broad-except
                self.results[i] = ("error", describe(e))
            self.done.wait()

    def round(self, calls):
        self.calls = calls
        self.start.wait()
        self.done.wait()
        return list(self.results)

    def close(self):
        self.stop = True
        self.start.wait()
        for th in self.threads:
            th.join()


def add_rounds(rounds, tag, ports):
    workers = Workers([client(p) for p in ports])
    out = {"rounds": rounds, "hosts": len(ports), "exactlyOne": 0, "none": 0, "several": 0, "errors": 0, "examples": []}
    for i in range(rounds):
        key = f"pylock-{tag}-{i}"
        replies = workers.round([lambda c, k=key: c.add(k, b"x", expire=60, noreply=False)] * len(ports))
        wins = sum(1 for r in replies if r == ("ok", True))
        out["errors"] += sum(1 for r in replies if r[0] == "error")
        if wins == 1:
            out["exactlyOne"] += 1
        else:
            out["none" if wins == 0 else "several"] += 1
            if len(out["examples"]) < 3:
                out["examples"].append({"round": i, "replies": replies})
    workers.close()
    return out


def incr_total(total, threads, ports):
    setup = client(ports[0])
    stored = setup.set("pycounter", b"0", expire=300, noreply=False)
    slots = [(p, t) for t in range(threads) for p in ports]
    shares = [[] for _ in slots]
    for i in range(total):
        shares[i % len(slots)].append(i)
    clients = [client(p) for p, _ in slots]

    def run(j):
        seen = []
        for _ in shares[j]:
            seen.append(clients[j].incr("pycounter", 1, noreply=False))
        return seen

    results = concurrently([lambda j=j: run(j) for j in range(len(slots))])
    values = [v for r in results if r[0] == "ok" for v in r[1]]
    errors = [r[1] for r in results if r[0] == "error"]
    numbers = [v for v in values if isinstance(v, int)]
    finals = []
    for p in ports:
        got = client(p).get("pycounter")
        finals.append(None if got is None else got.decode("latin1").strip())
    return {
        "stored": stored,
        "total": total,
        "connections": len(slots),
        "answered": len(numbers),
        "distinct": len(set(numbers)),
        "max": max(numbers) if numbers else None,
        "notFound": sum(1 for v in values if v is None),
        "errors": errors[:3],
        "errorThreads": len(errors),
        "finals": finals,
    }


def cas_rounds(rounds, tag, ports):
    setters = [client(p) for p in ports]
    workers = Workers([client(ports[1]), client(ports[2])])
    out = {"rounds": rounds, "exactlyOne": 0, "none": 0, "both": 0, "getsMissed": 0, "setFailed": 0, "errors": 0, "examples": []}
    for i in range(rounds):
        key = f"pycas-{tag}-{i}"
        if not setters[i % 3].set(key, b"a", expire=60, noreply=False):
            out["setFailed"] += 1
            continue
        value, unique = setters[(i + 1) % 3].gets(key)
        if value is None:
            out["getsMissed"] += 1
            continue
        replies = workers.round(
            [
                lambda c, k=key, u=unique: c.cas(k, b"b", u, expire=60, noreply=False),
                lambda c, k=key, u=unique: c.cas(k, b"c", u, expire=60, noreply=False),
            ]
        )
        wins = sum(1 for r in replies if r == ("ok", True))
        out["errors"] += sum(1 for r in replies if r[0] == "error")
        if wins == 1:
            out["exactlyOne"] += 1
        else:
            out["none" if wins == 0 else "both"] += 1
            if len(out["examples"]) < 3:
                out["examples"].append({"round": i, "replies": replies})
    workers.close()
    return out


def main(argv):
    mode = argv[1]
    if mode == "add":
        result = add_rounds(int(argv[2]), argv[3], [int(p) for p in argv[4:]])
    elif mode == "incr":
        result = incr_total(int(argv[2]), int(argv[3]), [int(p) for p in argv[4:]])
    elif mode == "cas":
        result = cas_rounds(int(argv[2]), argv[3], [int(p) for p in argv[4:7]])
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv)
