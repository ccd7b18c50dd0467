"""What Portal sends, as two workloads: "fresh" (6-9 KB share strings, a new client per request,
some overwrites of a recent identity) and "overwrite" (10,000 identities rewritten round-robin,
8 KB incompressible shares as JSON.stringified objects: a string full of escaped quotes)."""

from __future__ import annotations

import base64
import json
import random
import string
from dataclasses import dataclass
from pathlib import Path

METHODS = (
    "GDRIVE-SECP256K1",
    "ICLOUD-SECP256K1",
    "PASSKEY-ED25519",
    "PASSWORD-SECP256K1",
    "CUSTOM",
)
MIN_BODY, MAX_BODY = 6_000, 9_000
OVERWRITE_RATIO = 0.1
WORKLOADS = ("fresh", "overwrite")
OVERWRITE_IDENTITIES = 10_000
OVERWRITE_SHARE_BYTES = 8_000
_CUID = string.ascii_lowercase + string.digits


def _cuid(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(_CUID, k=22))


def _bignum(rng: random.Random, digits: int) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10**digits))


def _point(rng: random.Random) -> dict[str, str]:
    return {"X": _bignum(rng, 77), "Y": _bignum(rng, 77)}


def make_share(rng: random.Random, target: int) -> str:
    """A share document shaped like Portal's (ids, curve points, Paillier and Pedersen numbers)."""
    pair, client = _cuid(rng, "cm"), _cuid(rng, "cl")
    doc: dict[str, object] = {
        "backupSharePairId": pair,
        "signingSharePairId": _cuid(rng, "cm"),
        "curve": "SECP256K1",
        "share": _bignum(rng, 77),
        "pubkey": _point(rng),
        "partialPubkey": {"client": _point(rng), "server": _point(rng)},
        "clientId": client,
        "ssid": _bignum(rng, 32),
        "p": _bignum(rng, 309),
        "q": _bignum(rng, 309),
        "bks": {"client": {"X": _bignum(rng, 77), "Rank": 0}, "server": {"X": _bignum(rng, 77)}},
        "allY": {"client": _point(rng), "server": _point(rng)},
    }
    pederson: dict[str, str] = {}
    doc["pederson"] = pederson
    # Grow the Pedersen parameters until the whole webhook body lands on its target size.
    while len(json.dumps(json.dumps(doc, separators=(",", ":")))) + 120 < target:
        pederson[f"k{len(pederson)}"] = _bignum(rng, 100)
    return json.dumps(doc, separators=(",", ":"))


def make_shares(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [make_share(rng, rng.randint(MIN_BODY, MAX_BODY - 300)) for _ in range(count)]


def make_incompressible_share(rng: random.Random, target: int) -> str:
    """JSON.stringify of an object of random base64 fields: ~`target` characters, no
    redundancy for a compressor, four quotes per field for the JSON body to escape."""
    doc: dict[str, str] = {"backupSharePairId": _cuid(rng, "cm"), "clientId": _cuid(rng, "cl")}
    while len(json.dumps(doc, separators=(",", ":"))) < target - 80:
        doc[f"k{len(doc)}"] = base64.b64encode(rng.randbytes(48)).decode()
    return json.dumps(doc, separators=(",", ":"))


def make_workload_shares(mode: str, count: int, seed: int = 7) -> list[str]:
    """The share strings a workload sends (chosen at random per request)."""
    if mode == "overwrite":
        rng = random.Random(seed)
        return [make_incompressible_share(rng, OVERWRITE_SHARE_BYTES) for _ in range(count)]
    return make_shares(count, seed)


@dataclass(frozen=True, slots=True)
class Request:
    client_id: str
    method: str
    pair_id: str
    share: str
    fresh: bool

    def body(self) -> bytes:
        return json.dumps(
            {
                "clientId": self.client_id,
                "backupMethod": self.method,
                "backupSharePairId": self.pair_id,
                "share": self.share,
            }
        ).encode()


class Workload:
    """Fresh identities, and with probability OVERWRITE_RATIO a new share for a recent one; or
    (mode "overwrite") OVERWRITE_IDENTITIES identities rewritten round-robin."""

    def __init__(self, run_id: str, shares: list[str], seed: int = 11, mode: str = "fresh") -> None:
        self.run_id = run_id
        self.shares = shares
        self.rng = random.Random(seed)
        self.counter = 0
        self.recent: list[tuple[str, str, str]] = []
        self.mode = mode

    def next(self, busy: set[str] | None = None) -> Request:
        """The next request; with `busy` (identities with a request on its way), never one of
        them, and its own identity added to it (the driver discards it once answered and read
        back): marked here, not when its task first runs, an open loop running behind time
        could otherwise start two tasks for one identity, and the first one's read-back would
        see the second's share."""
        request = self._next(busy)
        if busy is not None:
            busy.add(request.client_id)
        return request

    def _next(self, busy: set[str] | None) -> Request:
        share = self.rng.choice(self.shares)
        if self.mode == "overwrite":
            # `fresh`: the row's commit time is this request's (the last write of the identity).
            for _ in range(OVERWRITE_IDENTITIES):
                self.counter += 1
                client = f"cl{self.run_id}o{self.counter % OVERWRITE_IDENTITIES:05d}"
                if busy is None or client not in busy:
                    break
            method = METHODS[ord(client[-1]) % len(METHODS)]  # as wrk_backup.lua picks it
            return Request(client, method, "cp" + client, share, fresh=True)
        if self.recent and self.rng.random() < OVERWRITE_RATIO:
            client, method, pair = self.rng.choice(self.recent)
            if busy is None or client not in busy:
                return Request(client, method, pair, share, fresh=False)
        self.counter += 1
        client = f"cl{self.run_id}p{self.counter:09d}"
        ident = (client, METHODS[self.counter % len(METHODS)], "cp" + client)
        if len(self.recent) < 1000:
            self.recent.append(ident)
        else:
            self.recent[self.rng.randrange(1000)] = ident
        return Request(*ident, share, fresh=True)


def write_wrk_data(
    path: Path,
    shares: list[str],
    *,
    run_id: str,
    url_path: str,
    secret: str,
    mode: str = "fresh",
) -> None:
    """The Lua table the wrk script loads: shares pre-escaped, so a request is string joins."""
    lines = [
        "return {",
        f"  run = {json.dumps(run_id)},",
        f"  path = {json.dumps(url_path)},",
        f"  mode = {json.dumps(mode)},",
        f"  identities = {OVERWRITE_IDENTITIES},",
        f"  overwrite = {OVERWRITE_RATIO},",
        "  headers = { ['Content-Type'] = 'application/json',"
        f" ['X-Webhook-Secret'] = {json.dumps(secret)} }},",
        "  methods = { " + ", ".join(json.dumps(m) for m in METHODS) + " },",
        "  shares = {",
    ]
    # Long brackets hold the JSON-escaped text verbatim (digits, letters, \" and punctuation).
    lines += [f"    [==[{json.dumps(s)[1:-1]}]==]," for s in shares]
    lines += ["  },", "}"]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
