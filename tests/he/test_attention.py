import numpy as np

from privinfer.he import attention as att
from privinfer.he import packing


def test_scores_and_weighted_values_per_head(client16384, rng):
    c = client16384
    tokens, head_dim, d = 8, 4, 8
    slots = c.params.slots
    c.add_rotation_steps(
        att.rotate_tokens_steps(tokens, slots) | att.head_sum_steps(tokens, head_dim, slots)
    )
    q, k, v = (rng.normal(size=(tokens, d)) for _ in range(3))
    cq, ck, cv = (c.encrypt(packing.pack_tokens(m, slots, tokens)[0]) for m in (q, k, v))
    diags = att.scores(c, cq, ck, tokens, head_dim)
    assert c.params.top_level - c.level(diags[0]) == 3
    plain = [c.decrypt(x) for x in diags]
    probs = []
    for h in range(d // head_dim):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        ref = q[:, cols] @ k[:, cols].T / np.sqrt(head_dim)
        for f in range(h * head_dim, (h + 1) * head_dim):  # copied over the head's features
            assert np.abs(att.diagonals_to_matrix(plain, tokens, f) - ref).max() < 1e-3
        a = np.exp(ref - ref.max(axis=1, keepdims=True))
        probs.append(a / a.sum(axis=1, keepdims=True))
    # client-side softmax stands in for the polynomial one; check A V in the same layout
    masks = att.causal_masks(tokens, slots)
    assert masks[1][0] == 0.0 and masks[tokens - 1][1] == 1.0  # t'=t+1 masked; t'=t-1 kept
    diag_vecs = []
    for r in range(tokens):
        vec = np.zeros(slots)
        for f in range(d):
            a = probs[f // head_dim]
            vec[f * tokens : (f + 1) * tokens] = [a[t, (t + r) % tokens] for t in range(tokens)]
        diag_vecs.append(c.encrypt(vec))
    out = att.weighted_values(c, diag_vecs, cv, tokens)
    got = packing.unpack_tokens([c.decrypt(out)], tokens, d, tokens)
    ref = np.concatenate(
        [probs[h] @ v[:, h * head_dim : (h + 1) * head_dim] for h in range(2)], axis=1
    )
    assert np.abs(got - ref).max() < 1e-3


def test_packed_scores_row_sums_and_weighted_values(client16384, rng):
    c = client16384
    tokens, head_dim, d = 8, 16, 32
    slots = c.params.slots
    c.add_rotation_steps(att.packed_steps(tokens, head_dim, slots))
    q, k, v = (rng.normal(size=(tokens, d)) for _ in range(3))
    cq, ck, cv = (c.encrypt(packing.pack_tokens(m, slots, tokens)[0]) for m in (q, k, v))
    diags = list(range(tokens))
    assert att.packed_fits(len(diags), tokens, head_dim, slots)
    assert not att.packed_fits(tokens + 1, tokens, head_dim, slots)
    packed = att.packed_scores(c, cq, ck, tokens, head_dim, 0.25, diags)
    assert c.params.top_level - c.level(packed) == 3
    vec = c.decrypt(packed)
    feature = np.arange(slots) // tokens
    assert np.abs(vec[feature % head_dim >= tokens]).max() < 1e-3  # free features stay zero
    probs = []
    for h in range(d // head_dim):
        cols = slice(h * head_dim, (h + 1) * head_dim)
        ref = q[:, cols] @ k[:, cols].T * 0.25
        got = att.packed_to_matrices(vec, tokens, head_dim, diags, h)
        assert np.abs(got - ref).max() < 1e-3
        a = np.exp(ref)
        probs.append(a / a.sum(axis=1, keepdims=True))
    # row sums: every used slot of a row gets the row's sum
    sums = c.decrypt(att.packed_row_sum(c, packed, tokens, head_dim))
    for h in range(d // head_dim):
        ref = (q[:, h * head_dim : (h + 1) * head_dim] @ k[:, h * head_dim : (h + 1) * head_dim].T
               * 0.25).sum(axis=1)  # fmt: skip
        for j in range(tokens):
            f = h * head_dim + j
            assert np.abs(sums[f * tokens : (f + 1) * tokens] - ref).max() < 1e-3
    # A V from client-packed probabilities (times a per-row scale of 2)
    pv = np.zeros(slots)
    for h in range(d // head_dim):
        for j in range(tokens):
            f = h * head_dim + j
            pv[f * tokens : (f + 1) * tokens] = [probs[h][t, (t + j) % tokens] for t in range(tokens)]
    out = att.packed_weighted_values(c, c.encrypt(pv), cv, tokens, head_dim, diags, np.full(slots, 2.0))
    got = packing.unpack_tokens([c.decrypt(out)], tokens, d, tokens)
    ref = np.concatenate(
        [probs[h] @ v[:, h * head_dim : (h + 1) * head_dim] for h in range(2)], axis=1
    )
    assert np.abs(got - 2 * ref).max() < 1e-3
