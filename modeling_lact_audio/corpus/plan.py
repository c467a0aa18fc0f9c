"""The build plan: every split's utterances and sessions, decided up front from the seed alone."""

import math
from dataclasses import asdict, dataclass

import numpy as np

from .real_speech import real_utterances
from .text_sources import TEST_DOMAIN, TRAIN_DOMAINS
from .voices import Speaker, base_voices, is_held_out, perturbed_speakers

SECONDS_PER_UTTERANCE = 3.4  # measured mean over all voices of the 8-hour build, for sizing
SECONDS_PER_SESSION = 180.0
NOISE_TYPES = ("white", "pink", "brown", "babble", "real")
NOISE_SNRS = (0.0, 5.0, 10.0)
TRAIN_NOISE = (("clean", 0.75), ("brown", 0.10), ("real", 0.15))
TRAIN_SNRS = (5.0, 10.0, 15.0, 20.0)
SEEN_ENGINE_WEIGHTS = {"espeak": 0.6, "festival": 0.2, "flite": 0.2}
SPLITS = (
    "train",
    "validation",
    "test_seen",
    "test_unseen_speakers",
    "test_noise",
    "test_domain",
    "test_real",
    "sessions_train",
    "sessions_test_seen",
    "sessions_test_unseen",
)
# Optional, built only when asked for (``--train-real``) and planned after every other split, so the
# splits above come out the same with or without it.
TRAIN_REAL = "train_real"


@dataclass(frozen=True)
class Sizes:
    """How much of everything to build."""

    train: int
    validation: int
    test_seen: int
    test_unseen_speakers: int
    noise_per_cell: int
    test_domain: int
    sessions_train: int
    sessions_test_seen: int
    sessions_test_unseen: int
    real_limit: int | None
    copies: int
    job_size: int
    babble_clips: int
    session_seconds: tuple[float, float]


def sizes_for(hours: float, tiny: bool) -> Sizes:
    """Split sizes. Takes: target ``hours`` of synthetic audio and the ``tiny`` flag. Returns: Sizes."""
    if tiny:
        return Sizes(24, 4, 4, 8, 1, 4, 1, 1, 1, 3, 2, 6, 8, (60.0, 66.0))
    n = hours * 3600 / SECONDS_PER_UTTERANCE
    sessions = hours * 3600 / SECONDS_PER_SESSION
    return Sizes(
        train=round(0.62 * n),
        validation=round(0.03 * n),
        test_seen=round(0.03 * n),
        test_unseen_speakers=round(0.04 * n),
        noise_per_cell=max(1, round(0.05 * n / 15)),
        test_domain=round(0.03 * n),
        sessions_train=max(1, round(0.09 * sessions)),
        sessions_test_seen=max(1, round(0.03 * sessions)),
        sessions_test_unseen=max(1, round(0.03 * sessions)),
        real_limit=None,
        copies=3,
        job_size=24,
        babble_clips=48,
        session_seconds=(60.0, 300.0),
    )


class _Pool:
    """Sentences handed out in a shuffled order, reshuffled when used up."""

    def __init__(self, items: list, rng: np.random.Generator):
        self.items, self.rng, self.order = items, rng, []

    def take(self):
        """Returns: the next item of the shuffled order."""
        if not self.order:
            self.order = list(self.rng.permutation(len(self.items)))
        return self.items[self.order.pop()]


def _speaker_pick(speakers: list[Speaker], weights: dict[str, float] | None, rng, i: int):
    engines = sorted({s.engine for s in speakers})
    if weights is None:
        # Engines in turn, so even a tiny split holds every held-out engine.
        engine = engines[i % len(engines)]
    else:
        p = np.array([weights[e] for e in engines])
        engine = engines[int(rng.choice(len(engines), p=p / p.sum()))]
    candidates = [s for s in speakers if s.engine == engine]
    return candidates[int(rng.integers(len(candidates)))]


def _utterances(split, count, pool, speakers, weights, conditions, rng):
    items = []
    for i in range(count):
        text, domain = pool.take()
        condition, snr = conditions(i, rng)
        speaker = _speaker_pick(speakers, weights, rng, i)
        items.append(
            dict(
                uid=f"{split}-{i:06d}",
                text=text,
                domain=domain,
                speaker=speaker.speaker_id,
                engine=speaker.engine,
                accent=speaker.accent,
                condition=condition,
                snr_db=snr,
            )
        )
    return items


def _train_condition(_, rng):
    names, p = zip(*TRAIN_NOISE)
    condition = names[int(rng.choice(len(names), p=p))]
    return condition, None if condition == "clean" else float(rng.choice(TRAIN_SNRS))


def _clean(*_):
    return "clean", None


def _index_streams(items: list[dict], split: str) -> list[dict]:
    # Each speaker's utterances in a split form one stream, ordered by uid, for test-time adaptation.
    seen: dict[str, int] = {}
    for item in items:
        item["session_id"] = f"{split}/{item['speaker']}"
        item["utterance_index"] = seen.get(item["speaker"], 0)
        seen[item["speaker"]] = item["utterance_index"] + 1
    return items


def _jobs(split: str, kind: str, items: list[dict], job_size: int) -> list[dict]:
    jobs = []
    for engine in sorted({it["engine"] for it in items}):
        same = [it for it in items if it["engine"] == engine]
        for k in range(math.ceil(len(same) / job_size)):
            jobs.append(
                dict(
                    job_id=f"{split}-{engine}-{k:04d}",
                    split=split,
                    kind=kind,
                    items=same[k * job_size : (k + 1) * job_size],
                )
            )
    return jobs


def train_real_jobs(items: list[dict], sizes: Sizes) -> list[dict]:
    """The jobs of ``train_real``. Takes: its items (``real_training_speech.training_utterances``) and
    the ``sizes``. Returns: "real" jobs, the same whether planned with the corpus or added to it later."""
    return _jobs(TRAIN_REAL, "real", _index_streams(items, TRAIN_REAL), sizes.job_size)


def make_plan(domains: dict[str, list[str]], seed: int, sizes: Sizes, train_real: list[dict] | None = None) -> dict:
    """Decide every example of the build.

    Takes: text ``domains`` (from load_domains), the ``seed``, the ``sizes`` and, optionally, the items
    of ``train_real``. Returns: a JSON-able dict with ``jobs`` (each: job_id, split, kind in
    utterances/session/real, items), the train and unseen speaker lists and the babble sentences. The
    same arguments always give the same plan; ``train_real`` adds its jobs last and draws nothing from
    the plan's random stream, so every other split is the same with it or without it.
    """
    rng = np.random.default_rng([seed, 1])
    voices = base_voices()
    seen = [s for v in voices if not is_held_out(v) for s in perturbed_speakers(v, sizes.copies, seed)]
    unseen = [s for v in voices if is_held_out(v) for s in perturbed_speakers(v, sizes.copies, seed)]

    train_text = [(t, d) for d in TRAIN_DOMAINS for t in domains[d]]
    order = list(rng.permutation(len(train_text)))
    n_test = max(sizes.test_seen, sizes.test_unseen_speakers)
    n_noise = sizes.noise_per_cell * len(NOISE_TYPES) * len(NOISE_SNRS)
    cut = np.cumsum([sizes.validation, n_test, n_noise])
    val_text, test_text, noise_text = ([train_text[i] for i in order[a:b]] for a, b in zip([0, *cut[:-1]], cut))
    rest = [train_text[i] for i in order[cut[-1] :]]
    # Held-out sessions read fortunes nobody trained on; the rest of the text is the training pool.
    n_sess = (sizes.sessions_test_seen + sizes.sessions_test_unseen) * 60
    fortunes_rest = [x for x in rest if x[1] == "fortunes"]
    session_text, held = fortunes_rest[:n_sess], set(fortunes_rest[:n_sess])
    train_pool = [x for x in rest if x not in held]

    def noise_condition(i, _):
        cell = i // sizes.noise_per_cell
        return NOISE_TYPES[cell // len(NOISE_SNRS)], NOISE_SNRS[cell % len(NOISE_SNRS)]

    pool = lambda items: _Pool(items, rng)
    splits = {
        "train": _utterances("train", sizes.train, pool(train_pool), seen, SEEN_ENGINE_WEIGHTS, _train_condition, rng),
        "validation": _utterances(
            "validation", sizes.validation, pool(val_text), seen, SEEN_ENGINE_WEIGHTS, _train_condition, rng
        ),
        "test_seen": _utterances("test_seen", sizes.test_seen, pool(test_text), seen, SEEN_ENGINE_WEIGHTS, _clean, rng),
        "test_unseen_speakers": _utterances(
            "test_unseen_speakers", sizes.test_unseen_speakers, pool(test_text), unseen, None, _clean, rng
        ),
        "test_noise": _utterances(
            "test_noise", n_noise, pool(noise_text), seen, SEEN_ENGINE_WEIGHTS, noise_condition, rng
        ),
        "test_domain": _utterances(
            "test_domain",
            sizes.test_domain,
            pool([(t, TEST_DOMAIN) for t in domains[TEST_DOMAIN]]),
            seen,
            SEEN_ENGINE_WEIGHTS,
            _clean,
            rng,
        ),
    }
    jobs = []
    for split, items in splits.items():
        jobs += _jobs(split, "utterances", _index_streams(items, split), sizes.job_size)
    jobs += _jobs("test_real", "real", _index_streams(real_utterances(sizes.real_limit), "test_real"), sizes.job_size)

    train_fortunes = [x for x in train_pool if x[1] == "fortunes"]
    session_pools = {
        "sessions_train": pool(train_fortunes),
        "sessions_test_seen": pool(session_text),
        "sessions_test_unseen": pool(session_text),
    }
    for split, count, speakers in (
        ("sessions_train", sizes.sessions_train, seen),
        ("sessions_test_seen", sizes.sessions_test_seen, seen),
        ("sessions_test_unseen", sizes.sessions_test_unseen, unseen),
    ):
        for k in range(count):
            speaker = _speaker_pick(speakers, SEEN_ENGINE_WEIGHTS if speakers is seen else None, rng, k)
            candidates = [session_pools[split].take()[0] for _ in range(60)]
            jobs.append(
                dict(
                    job_id=f"{split}-{k:04d}",
                    split=split,
                    kind="session",
                    speaker=speaker.speaker_id,
                    engine=speaker.engine,
                    accent=speaker.accent,
                    domain="fortunes",
                    candidates=candidates,
                    target_s=float(rng.uniform(*sizes.session_seconds)),
                )
            )
    babble_text = [train_pool[i][0] for i in rng.permutation(len(train_pool))[:200]]
    if train_real is not None:
        jobs += train_real_jobs(train_real, sizes)
    return dict(
        seed=seed,
        sizes=asdict(sizes),
        jobs=jobs,
        babble_text=babble_text,
        seen_speakers=[s.speaker_id for s in seen],
        unseen_speakers=[s.speaker_id for s in unseen],
    )
