"""Self-consistency: k answers of one clip combined into one record (majority label, mean scores)."""

from collections import Counter



def aggregate_answers(parsed, labels):
    """Combine k parsed answers: majority label (ties: the higher mean score, then label-set order), mean
    renormalised scores, ``agreement`` = share of labelled answers with the majority label, ``confidence`` =
    5 x agreement. Returns a dict shaped like :func:`teachers.parse.parse_answer`'s plus
    ``agreement``."""
    ok = [p for p in parsed if p.get("label")]
    warnings = []
    for p in parsed:
        for w in p.get("warnings") or []:
            if w not in warnings:
                warnings.append(w)
    if len(ok) < len(parsed):
        warnings.append(f"{len(parsed) - len(ok)} of {len(parsed)} answers had no label")
    vectors = [p["scores"] for p in parsed if isinstance(p.get("scores"), dict) and p["scores"]]
    scores = None
    if vectors:
        mean = {lab: sum(float(v.get(lab) or 0.0) for v in vectors) / len(vectors) for lab in labels}
        total = sum(mean.values())
        scores = {lab: s / total for lab, s in mean.items()} if total > 0 else None
    if not ok:
        errors = [p.get("error") for p in parsed if p.get("error")]
        return {"label": None, "scores": scores, "confidence": None, "confidence_source": "none",
                "description": "", "contributions": None, "warnings": warnings, "agreement": None,
                "error": errors[0] if errors else "no answer held a label"}
    counts = Counter(p["label"] for p in ok)
    top = max(counts.values())
    order = {lab: i for i, lab in enumerate(labels)}
    tied = [lab for lab, c in counts.items() if c == top]
    label = min(tied, key=lambda lab: (-(scores or {}).get(lab, 0.0), order.get(lab, len(order))))
    first = next(p for p in ok if p["label"] == label)
    agreement = top / len(ok)
    return {"label": label, "scores": scores, "confidence": 5.0 * agreement, "confidence_source": "agreement",
            "description": first.get("description") or "", "contributions": first.get("contributions"),
            "warnings": warnings, "agreement": agreement, "error": None}
