"""Regenerates labeling-ui/tests/fixtures/agreement.json: annotators' judgments of ranked items, and
the agreement figures reference implementations give for them. The Rust test
(labeling-ui/tests/agreement.rs) feeds the same judgments to labeling::agreement::agreement_report.

Figures and their references (the definitions are in labeling-ui/src/agreement.rs):
- krippendorff_alpha_ordinal / _interval: the PyPI package `krippendorff`
  (alpha(reliability_data=..., level_of_measurement=...)), rows = annotators, columns = units
  (item, candidate pair a < b), np.nan where an annotator did not judge the unit; the values are
  the signed strengths −4..4 (+ when a is ranked above b, 0 for a tie).
- kendall_tau: the mean over items and annotator pairs of scipy.stats.kendalltau(variant="b")
  between the two rankings (candidates joined by a tie step share a rank); pairs where scipy says
  nan (a ranking of all ties) are left out, as the Rust side does.
- pairwise_agreement: counted here directly (the fraction of (unit, two annotators) whose signs
  match, tie its own sign).

Run:  python3 -m venv /work/.venv-agree && /work/.venv-agree/bin/pip install krippendorff scipy numpy
      /work/.venv-agree/bin/python dev/agreement_fixtures.py
(Python 3.11.7, krippendorff 0.9.0, scipy 1.17.1, numpy 2.4.6)
"""

import itertools
import importlib.metadata
import json
import math
import pathlib
import random
import warnings

import krippendorff
import numpy as np
import scipy
import scipy.stats

OUTPUT = pathlib.Path(__file__).resolve().parent.parent / "labeling-ui/tests/fixtures/agreement.json"
MAGNITUDE = {"significantly_better": 4, "better": 3, "slightly_better": 2, "marginally_better": 1, "tie": 0}
LEVELS = list(MAGNITUDE)


def judgment(ranking, strengths, all_bad=False, edited=None):
    """The Judgment JSON of labeling-ui/src/judgment.rs."""
    return {"ranking": ranking, "strengths": strengths, "all_bad": all_bad, "not_rankable": False, "edited": edited}


NOT_RANKABLE = {"ranking": [], "strengths": [], "all_bad": False, "not_rankable": True, "edited": None}


def strength_from_gap(gap):
    """A perceived quality gap between adjacent candidates → a level (or a tie)."""
    for bound, level in [(0.15, "tie"), (0.4, "marginally_better"), (0.8, "slightly_better"), (1.4, "better")]:
        if gap < bound:
            return level
    return "significantly_better"


def candidate_ids(rng, item, count):
    """Distinct ids whose order has nothing to do with quality."""
    return [item * 100 + offset for offset in rng.sample(range(1, 100), count)]


def perceived_judgment(rng, qualities, noise):
    """Ranks candidates by quality plus Gaussian noise; the strength of each step follows the gap."""
    scores = {candidate: quality + rng.gauss(0.0, noise) for candidate, quality in qualities.items()}
    ranking = sorted(scores, key=lambda candidate: -scores[candidate])
    strengths = [strength_from_gap(scores[a] - scores[b]) for a, b in zip(ranking, ranking[1:])]
    return judgment(ranking, strengths)


def random_judgment(rng, candidates):
    """A ranking and strengths drawn independently of anything."""
    ranking = rng.sample(candidates, len(candidates))
    strengths = [rng.choice(LEVELS) for _ in ranking[1:]]
    return judgment(ranking, strengths)


def noisy_case(rng):
    """3 annotators × 20 items × 3–4 candidates, all judging every item around a shared quality."""
    judgments = []
    for item in range(1, 21):
        candidates = candidate_ids(rng, item, rng.choice([3, 4]))
        qualities = {candidate: rng.gauss(0.0, 1.0) for candidate in candidates}
        for annotator in (1, 2, 3):
            entry = perceived_judgment(rng, qualities, 0.6)
            judgments.append({"item": item, "annotator": annotator, "judgment": entry})
    return judgments


def independent_case(rng):
    """3 annotators × 20 items × 3–4 candidates, every judgment random (agreement near chance)."""
    judgments = []
    for item in range(1, 21):
        candidates = candidate_ids(rng, item, rng.choice([3, 4]))
        for annotator in (1, 2, 3):
            judgments.append({"item": item, "annotator": annotator, "judgment": random_judgment(rng, candidates)})
    return judgments


def perfect_case(rng):
    """3 annotators submit the same judgment of each of 10 items (no all-tie ranking)."""
    judgments = []
    for item in range(1, 11):
        candidates = candidate_ids(rng, item, rng.choice([3, 4]))
        shared = random_judgment(rng, candidates)
        shared["strengths"][0] = rng.choice(LEVELS[:4])
        for annotator in (1, 2, 3):
            judgments.append({"item": item, "annotator": annotator, "judgment": json.loads(json.dumps(shared))})
    return judgments


def missing_case(rng):
    """5 annotators, 25 items of 2–4 candidates, each item judged by 1–4 of them; some judgments are
    not_rankable (skipped), all_bad or carry an edit (both still count)."""
    judgments = []
    for item in range(1, 26):
        candidates = candidate_ids(rng, item, rng.choice([2, 3, 4]))
        qualities = {candidate: rng.gauss(0.0, 1.0) for candidate in candidates}
        annotators = sorted(rng.sample(range(1, 6), rng.choice([1, 2, 2, 3, 4])))
        for annotator in annotators:
            roll = rng.random()
            if roll < 0.08:
                entry = NOT_RANKABLE
            else:
                entry = perceived_judgment(rng, qualities, 0.8)
                if roll > 0.9:
                    entry["all_bad"] = True
                if 0.8 < roll < 0.95:
                    edit = f"an edit by annotator {annotator}"
                    entry["edited"] = {"candidate_id": entry["ranking"][0], "content": edit}
            judgments.append({"item": item, "annotator": annotator, "judgment": entry})
    return judgments


def single_annotator_case(rng):
    """Every item judged by one annotator: nothing is comparable, every figure is undefined."""
    judgments = []
    for item in range(1, 6):
        candidates = candidate_ids(rng, item, 3)
        judgments.append({"item": item, "annotator": item % 2 + 1, "judgment": random_judgment(rng, candidates)})
    return judgments


def signed_values(entry):
    """{(a, b) with a < b: signed strength of a over b} of one judgment."""
    ranking, strengths = entry["ranking"], entry["strengths"]
    values = {}
    for higher, lower in itertools.combinations(range(len(ranking)), 2):
        magnitude = max(MAGNITUDE[step] for step in strengths[higher:lower])
        above, below = ranking[higher], ranking[lower]
        if above < below:
            values[(above, below)] = magnitude
        else:
            values[(below, above)] = -magnitude
    return values


def tie_ranks(entry):
    """Candidate → rank, candidates joined by tie steps sharing one."""
    ranks, rank = {}, 0
    for position, candidate in enumerate(entry["ranking"]):
        if position > 0 and entry["strengths"][position - 1] != "tie":
            rank += 1
        ranks[candidate] = rank
    return ranks


def reference_figures(judgments):
    usable = [j for j in judgments if not j["judgment"]["not_rankable"]]
    units = {}  # (item, a, b) → {annotator: value}
    for entry in usable:
        for (a, b), value in signed_values(entry["judgment"]).items():
            units.setdefault((entry["item"], a, b), {})[entry["annotator"]] = value

    comparisons = agreements = 0
    for values in units.values():
        for first, second in itertools.combinations(sorted(values), 2):
            comparisons += 1
            agreements += int(np.sign(values[first]) == np.sign(values[second]))

    annotators = sorted({entry["annotator"] for entry in usable})
    unit_keys = sorted(units)
    pairable_units = sum(1 for values in units.values() if len(values) >= 2)
    alphas = {}
    for level in ("ordinal", "interval"):
        if pairable_units == 0:
            alphas[level] = None
            continue
        # shape (annotators, units), nan where the annotator did not judge the unit
        data = np.full((len(annotators), len(unit_keys)), np.nan)
        for column, key in enumerate(unit_keys):
            for annotator, value in units[key].items():
                data[annotators.index(annotator), column] = value
        value = krippendorff.alpha(reliability_data=data, level_of_measurement=level)
        alphas[level] = None if math.isnan(value) else float(value)

    by_item = {}
    for entry in usable:
        by_item.setdefault(entry["item"], {})[entry["annotator"]] = entry["judgment"]
    taus = []
    for item in sorted(by_item):
        for first, second in itertools.combinations(sorted(by_item[item]), 2):
            ranks_first, ranks_second = tie_ranks(by_item[item][first]), tie_ranks(by_item[item][second])
            common = sorted(set(ranks_first) & set(ranks_second))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scipy warns before returning nan for constant input
                tau = scipy.stats.kendalltau(
                    [ranks_first[c] for c in common], [ranks_second[c] for c in common], variant="b"
                ).statistic
            if not math.isnan(tau):
                taus.append(float(tau))

    return {
        "pairwise_agreement": agreements / comparisons if comparisons else None,
        "pairwise_comparisons": comparisons,
        "krippendorff_alpha_ordinal": alphas["ordinal"],
        "krippendorff_alpha_interval": alphas["interval"],
        "pairable_units": pairable_units,
        "kendall_tau": sum(taus) / len(taus) if taus else None,
        "kendall_pairs": len(taus),
    }


def layout(fixture):
    """Indented JSON with one judgment per line, so a diff of the fixture reads judgment by judgment."""
    placeholders = {}
    for case in fixture["cases"]:
        for index, entry in enumerate(case["judgments"]):
            key = f"@judgment {len(placeholders)}@"
            placeholders[key] = json.dumps(entry, ensure_ascii=False)
            case["judgments"][index] = key
    text = json.dumps(fixture, indent=1, ensure_ascii=False)
    for key, line in placeholders.items():
        text = text.replace(json.dumps(key), line)
    return text + "\n"


def main() -> None:
    rng = random.Random(20240917)
    builders = [noisy_case, independent_case, perfect_case, missing_case, single_annotator_case]
    cases = []
    for build in builders:
        judgments = build(rng)
        cases.append(
            {
                "name": build.__name__.removesuffix("_case"),
                "description": build.__doc__,
                "judgments": judgments,
                "expected": reference_figures(judgments),
            }
        )
    fixture = {
        "generated_by": "dev/agreement_fixtures.py",
        "versions": {
            "krippendorff": importlib.metadata.version("krippendorff"),
            "scipy": scipy.__version__,
            "numpy": np.__version__,
        },
        "cases": cases,
    }
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(layout(fixture))
    for case in cases:
        print(case["name"], json.dumps(case["expected"]))


if __name__ == "__main__":
    main()
