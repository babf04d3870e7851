"""Person linking over a whole night: time and peak memory of :func:`fermon.people.linking.link_persons`.

    python benchmarks/linking_night.py --hours 8 --out reports/performance/linking.json

A night of one patient whose face comes and goes (a track of 0.4 to 3 s, then 0.5 to 2 s away: some
1,200 tracks an hour, as a held-out four-hour recording had), a nurse who looks in for a few seconds
every 20 minutes, and a tenth of the tracks too small or blurred to embed (they link by position).
Descriptors are drawn as dlib's are spread: people about 0.8 apart, one person's track means about
0.25 apart. The figures are linking alone (the session's loop is measured by identity_speed.py);
tracemalloc gives the peak of what linking allocates.
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np

from fermon.faces.track import TrackStats
from fermon.people.linking import link_persons

FPS = 5.0


def night(hours: float, seed: int = 0) -> tuple[dict[int, TrackStats], dict[int, np.ndarray], dict[int, str]]:
    rng = np.random.default_rng(seed)
    centres = {name: rng.normal(0, 0.05, 128) for name in ("patient", "nurse")}
    stats, descriptors, who = {}, {}, {}
    box = np.array([250, 100, 360, 230], np.float32)
    t, next_nurse = 0.0, 1200.0
    while t < hours * 3600:
        name = "patient"
        length = rng.uniform(0.4, 3.0)
        if t >= next_nurse:
            name, length, next_nurse = "nurse", rng.uniform(2, 8), next_nurse + 1200
        track = len(stats)
        jitter = rng.normal(0, 4, 4).astype(np.float32)
        first, last = round(t * FPS), round((t + length) * FPS)
        stats[track] = TrackStats(first, last, t, t + length, box + jitter, box + jitter, last - first + 1)
        if rng.random() > 0.1:
            descriptors[track] = centres[name] + rng.normal(0, 0.0177, 128)
        who[track] = name
        t += length + rng.uniform(0.5, 2.0)
    return stats, descriptors, who


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    stats, descriptors, who = night(args.hours)
    tracemalloc.start()
    started = time.perf_counter()
    links = link_persons(stats, descriptors)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    patient = [t for t in stats if who[t] == "patient"]
    persons = [links.person_of_track[t] for t in patient]
    main_person = max(set(persons), key=persons.count)
    result = {
        "hours": args.hours,
        "tracks": len(stats),
        "tracks_embedded": len(descriptors),
        "seconds": round(seconds, 2),
        "peak_mib": round(peak / 2**20, 1),
        "persons": links.persons,
        "patient_tracks_in_the_patients_person": round(persons.count(main_person) / len(patient), 4),
        "nurse_tracks_in_the_patients_person": sum(
            links.person_of_track[t] == main_person for t in stats if who[t] == "nurse"
        ),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
