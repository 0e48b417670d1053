"""The threat matrix: for each mode, each asset against each adversary -> protected or not, how,
under which assumption. Written once here; the CLI and the docs render it."""

from __future__ import annotations

from dataclasses import dataclass

ASSETS = ("prompt", "weights", "output", "metadata")
ADVERSARIES = (
    "network observer",
    "host operator",
    "one compute party",
    "two colluding parties",
    "the client",
    "the server",
)


@dataclass(frozen=True)
class Cell:
    protected: str  # "yes", "no", "partly", "n/a"
    mechanism: str
    assumption: str = ""


def _c(p: str, m: str, a: str = "") -> Cell:
    return Cell(p, m, a)


NA = _c("n/a", "this adversary does not exist in this mode")
META_LEAK = "token counts, sequence length and timing are visible"

MATRIX: dict[str, dict[str, dict[str, Cell]]] = {
    "plain": {
        adv: {
            asset: (
                NA
                if adv in ("one compute party", "two colluding parties")
                else _c("no", "nothing protects it: plain runs in the clear")
            )
            for asset in ASSETS
        }
        for adv in ADVERSARIES
    },
    "tee": {
        "network observer": {
            "prompt": _c(
                "yes",
                "AES-256-GCM channel keyed by X25519 bound into the attested quote",
                "the client verifies the quote and pins the platform root",
            ),
            "weights": _c("yes", "weights never leave the enclave host; sealed at rest"),
            "output": _c("yes", "AES-256-GCM channel, per-direction keys, counter nonces"),
            "metadata": _c("no", "record sizes and timing reveal " + META_LEAK),
        },
        "host operator": {
            "prompt": _c(
                "yes",
                "the host forwards ciphertext only; the enclave process holds the keys",
                "hardware TEE: memory isolation; software platform: the operator is not root",
            ),
            "weights": _c(
                "yes",
                "model sealed to the enclave's measurement/signer; host stores the blob",
                "as above; rollback detected with a monotonic counter",
            ),
            "output": _c(
                "yes", "encrypted inside the enclave before it reaches the host", "as above"
            ),
            "metadata": _c(
                "no", META_LEAK + "; side channels (cache, power, page faults) out of scope"
            ),
        },
        "one compute party": {a: NA for a in ASSETS},
        "two colluding parties": {a: NA for a in ASSETS},
        "the client": {
            "prompt": _c("n/a", "the client owns the prompt"),
            "weights": _c(
                "partly",
                "weights stay in the enclave; outputs may leak them to a determined "
                "querier (model extraction is out of scope)",
            ),
            "output": _c("n/a", "the client owns the output"),
            "metadata": _c("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": _c("yes", "the 'server' is host + enclave: see host operator"),
            "weights": _c("n/a", "the server side owns the weights"),
            "output": _c("yes", "see host operator"),
            "metadata": _c("no", META_LEAK),
        },
    },
    "mpc": {
        "network observer": {
            "prompt": _c("yes", "mutually authenticated TLS 1.3 between parties and client"),
            "weights": _c("yes", "TLS; and weights exist only as replicated shares"),
            "output": _c("yes", "only shares of the next token, sent to the client"),
            "metadata": _c("no", META_LEAK + "; message sizes follow the model shape"),
        },
        "host operator": {
            "prompt": _c(
                "yes",
                "each host runs one party and holds two of three shares",
                "operators of different parties do not collude (honest majority)",
            ),
            "weights": _c("yes", "replicated shares from the model owner", "honest majority"),
            "output": _c("yes", "revealed to the client only", "honest majority"),
            "metadata": _c("no", META_LEAK),
        },
        "one compute party": {
            "prompt": _c(
                "yes",
                "its two shares are uniformly random; its view is simulatable",
                "semi-honest: it follows the protocol",
            ),
            "weights": _c("yes", "replicated sharing over Z_2^64", "semi-honest"),
            "output": _c(
                "yes",
                "the argmax / Gumbel-max result is revealed to the client only",
                "semi-honest",
            ),
            "metadata": _c("no", "sequence length, number of tokens, model shape, timing"),
        },
        "two colluding parties": {
            "prompt": _c("no", "two parties hold all three shares and can reconstruct"),
            "weights": _c("no", "reconstructible by two parties"),
            "output": _c("no", "reconstructible by two parties"),
            "metadata": _c("no", META_LEAK),
        },
        "the client": {
            "prompt": _c("n/a", "the client owns the prompt"),
            "weights": _c("partly", "the client sees only sampled token ids, never logits"),
            "output": _c("n/a", "the client owns the output"),
            "metadata": _c("n/a", "the client owns its metadata"),
        },
        "the server": {
            a: _c("n/a", "the servers are the compute parties: see those rows") for a in ASSETS
        },
    },
    "he": {
        "network observer": {
            "prompt": _c(
                "yes", "CKKS ciphertexts (RLWE, >= 128-bit parameters) on an authenticated channel"
            ),
            "weights": _c("yes", "weights never leave the server"),
            "output": _c("yes", "encrypted under the client's key"),
            "metadata": _c("no", META_LEAK),
        },
        "host operator": {
            "prompt": _c(
                "yes",
                "the server computes on ciphertexts only",
                "RLWE hardness; semi-honest server",
            ),
            "weights": _c("n/a", "the server operator owns the weights"),
            "output": _c("yes", "encrypted under the client's key", "RLWE hardness"),
            "metadata": _c("no", "sequence length, model shape, number of refresh rounds, timing"),
        },
        "one compute party": {a: NA for a in ASSETS},
        "two colluding parties": {a: NA for a in ASSETS},
        "the client": {
            "prompt": _c("n/a", "the client owns the prompt"),
            "weights": _c(
                "partly",
                "refresh values are masked by the server (statistical masking + noise "
                "flooding); the output itself and, where the embedding runs client-side, "
                "the embedding table are revealed",
            ),
            "output": _c("n/a", "the client owns the output"),
            "metadata": _c("n/a", "the client owns its metadata"),
        },
        "the server": {
            "prompt": _c("yes", "see host operator", "RLWE hardness"),
            "weights": _c("n/a", "the server owns the weights"),
            "output": _c("yes", "see host operator", "RLWE hardness"),
            "metadata": _c("no", "sequence length, model shape, timing"),
        },
    },
}


def matrix_json(mode: str) -> dict[str, dict[str, dict[str, str]]]:
    return {
        adv: {asset: dict(cell.__dict__) for asset, cell in row.items()}
        for adv, row in MATRIX[mode].items()
    }


def render_markdown(mode: str) -> str:
    rows = [f"| adversary | {' | '.join(ASSETS)} |", "|---|" + "---|" * len(ASSETS)]
    for adv, row in MATRIX[mode].items():
        cells = []
        for asset in ASSETS:
            c = row[asset]
            cells.append(
                c.protected
                if c.protected in ("n/a",)
                else f"**{c.protected}**: {c.mechanism}"
                + (f" (if {c.assumption})" if c.assumption else "")
            )
        rows.append(f"| {adv} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
