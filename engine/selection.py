"""Choosing a setting on validation when validation scores tie: the one-standard-error rule.

A validation accuracy over ``n`` samples is only known to about one binomial standard error,
``sqrt(p (1 - p) / n)``. When several settings score within that margin of the best, the data cannot tell
them apart, and the rule (Breiman et al. 1984; Hastie, Tibshirani and Friedman, *The Elements of Statistical
Learning*, 7.10) takes the simplest of them, here the most regularised. It matters where validation is
nearly saturated: on MOSI's bc-LSTM features every setting scores 0.98-1.00 on validation, and picking the
bare maximum is picking noise.
"""

import math


def binomial_se(p, n):
    """Standard error of an accuracy ``p`` measured on ``n`` samples; ``p`` is kept within [1/n, 1 - 1/n] so
    that a perfect (or zero) score still carries the uncertainty of one sample."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of validation samples, got {n}")
    p = min(max(float(p), 1.0 / n), 1.0 - 1.0 / n) if n > 1 else 0.5
    return math.sqrt(p * (1.0 - p) / n)


def one_standard_error(scores, n, simplicity):
    """Index of the simplest setting whose validation accuracy is within one standard error of the best.

    ``scores``: validation accuracies, one per setting; ``n``: validation samples behind each score;
    ``simplicity``: one number per setting, larger = simpler (e.g. the weight decay). Ties in simplicity go to
    the higher score, then to the earlier setting.
    """
    if not scores or len(scores) != len(simplicity):
        raise ValueError(f"need one simplicity value per score, got {len(scores)} scores and "
                         f"{len(simplicity)} simplicity values")
    best = max(scores)
    threshold = best - binomial_se(best, n)
    within = [i for i, s in enumerate(scores) if s >= threshold - 1e-12]
    return max(within, key=lambda i: (simplicity[i], scores[i], -i))
