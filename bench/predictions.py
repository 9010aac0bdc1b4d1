"""Back-test of hystate's predictions (hystate/reports/forecast.py): train on the first part of a
migration's history, predict the rest, measure the error.

The history is the demo's pipeline (hystate.demo: its catalog set-up, its errors, its 10%
failure rate, its weekly schedule) replayed in virtual time: `make demo` itself does
milliseconds of work per step and hystate's timestamps have one-second resolution, so its
run durations are all 0 s and there is nothing to learn from them. Here every step takes what
it would take for real, drawn from the episode's real mp3 size and duration (from
../shared/data/hooting-yard-episodes.json, imported through `hystate import` from a legacy tree
built in a scratch folder; random sizes shaped like the real ones when that file is absent):
download = size / archive.org bandwidth, conversion ~ audio duration, upload = video size /
upload bandwidth, with log-normal noise; four workers; hystate's own API makes every commit.

    python bench/predictions.py [--workers 4] [--seed 2004] [--history DIR] [--json OUT]

--history DIR back-tests an existing state repository instead (e.g. the one `make demo` made).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import random
import statistics
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hystate import demo
from hystate.core.model import parse_time
from hystate.reports import fit as predict
from hystate.reports import forecast

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "hooting-yard-episodes.json"
if not SHARED.exists():
    SHARED = ROOT.parent.parent / "shared" / "data" / "hooting-yard-episodes.json"
RETRY_DELAY = 300.0  # the default recovery.retry_delay, in virtual seconds
MAX_RETRIES = {"download": 3, "conversion": 2, "upload": 3}
PRIORITY = ("uploading", "converting", "downloading")  # a free worker takes later stages first
DONE = {"downloading": "downloaded", "converting": "converted", "uploading": "uploaded"}
KIND = {"downloading": "download", "converting": "conversion", "uploading": "upload"}

_clock = [0.0]


def _now() -> str:
    return datetime.fromtimestamp(_clock[0], UTC).isoformat(timespec="seconds")


# -- the simulated migration ---------------------------------------------------------------


def write_legacy_tree(base: Path, episodes: list[dict[str, Any]]) -> None:
    import yaml

    for e in episodes:
        folder = base / e["date"][:4]
        folder.mkdir(parents=True, exist_ok=True)
        doc = {
            "identifier": e["identifier"],
            "title": e["title"],
            "date": f"{e['date']}T00:00:00",
            "mp3": {"size": e["mp3_size"], "duration": e["duration_s"], "md5": e["mp3_md5"]},
            "status": {"available": True, "download_url": e["mp3_url"]},
        }
        (folder / f"{e['identifier']}.yaml").write_text(yaml.safe_dump(doc))


def simulate(
    target: Path, workers: int, seed: int, failure_rate: float, stop_after: int | None = None
) -> dict[str, Any]:
    """The migration in virtual time; ``stop_after`` runs leaves it half done (to look at)."""
    from hystate import StateManager
    from hystate.engine import steps as steps_module
    from hystate.integrations import importer

    rng = random.Random(seed)
    # virtual time from a day ago: discovery, import and every transition on one clock
    start = datetime.now(UTC).timestamp() - 86400
    _clock[0] = start
    steps_module.now_utc = _now  # type: ignore[assignment]
    importer.now_utc = _now  # type: ignore[assignment]
    count = demo.prepare(target, ROOT / "processed")
    manager = StateManager(cwd=target, worker="sim")
    known: dict[str, tuple[int, float]] = {}
    if SHARED.exists():
        real = json.loads(SHARED.read_text())
        ids = {e.episode_id for e in manager.list_episodes()}
        with tempfile.TemporaryDirectory() as scratch:
            write_legacy_tree(Path(scratch), [e for e in real if e["identifier"] in ids])
            importer.import_legacy(manager, Path(scratch))
        known = {e["identifier"]: (e["mp3_size"], e["duration_s"]) for e in real}
    ranked = sorted(manager.list_episodes(), key=lambda e: (e.date, e.episode_id))
    slot = {e.episode_id: i for i, e in enumerate(ranked)}
    start += 60
    queues: dict[str, list[tuple[float, int, str, bool]]] = {s: [] for s in PRIORITY}
    seq = 0
    for episode in ranked:
        heapq.heappush(queues["downloading"], (start, seq, episode.episode_id, False))
        seq += 1
    free = [start] * workers
    sizes: dict[str, tuple[int, float]] = {}
    done = 0
    while any(queues.values()) and (stop_after is None or done < stop_after):
        w = min(range(workers), key=free.__getitem__)
        now = free[w]
        ready = [s for s in PRIORITY if queues[s] and queues[s][0][0] <= now]
        if not ready:
            free[w] = min(q[0][0] for q in queues.values() if q)
            continue
        stage = ready[0]
        _, _, eid, retry = heapq.heappop(queues[stage])
        _clock[0] = now
        if retry:
            [outcome] = manager.retry([eid], now=True)
            if outcome.action != "retried":
                continue  # out of attempts: skipped
        else:
            manager.update_state(eid, stage, worker=f"worker-{w}")
        size, duration = sizes.setdefault(eid, known.get(eid) or _random_audio(rng))
        seconds = _work_seconds(stage, size, duration, rng)
        if rng.random() < failure_rate:
            _clock[0] = now + seconds * rng.uniform(0.1, 1.0)
            manager.fail(eid, rng.choice(demo.ERRORS[stage]))
            attempts = manager.episode(eid).attempts[KIND[stage]]
            again = _clock[0] + RETRY_DELAY * 2 ** (attempts - 1)
            heapq.heappush(queues[stage], (again, seq, eid, True))
        else:
            _clock[0] = now + seconds
            manager.update_state(
                eid, DONE[stage], fields=_fields(stage, eid, size, duration, seconds, rng)
            )
            if stage == "uploading":
                when = (demo.FIRST_SLOT + timedelta(weeks=slot[eid])).isoformat()
                manager.update_state(eid, "scheduled", fields={"youtube.scheduled_date": when})
                manager.update_state(eid, "published", fields={"youtube.published_date": when})
            else:
                nxt = PRIORITY[PRIORITY.index(stage) - 1]
                heapq.heappush(queues[nxt], (_clock[0], seq, eid, False))
        seq += 1
        done += 1
        free[w] = _clock[0]
    return {"episodes": count, "sizes_from": str(SHARED) if known else "random"}


def _random_audio(rng: random.Random) -> tuple[int, float]:
    duration = max(600.0, rng.gauss(1800, 300))
    return int(duration * rng.choice((16_000, 40_000))), round(duration, 2)  # 128 or 320 kbit/s


def _work_seconds(stage: str, size: int, duration: float, rng: random.Random) -> float:
    if stage == "downloading":  # archive.org: about 1.5 MB/s, varying a lot
        return 3 + size / (1.5e6 * rng.lognormvariate(0, 0.45))
    if stage == "converting":  # ffmpeg, still image + audio: about 25x real time
        return 2 + duration * 0.04 * rng.lognormvariate(0, 0.15)
    video = duration * 24_000  # the AAC track and the still image: size follows duration
    return 5 + video / (0.8e6 * rng.lognormvariate(0, 0.5))


def _fields(
    stage: str, eid: str, size: int, duration: float, seconds: float, rng: random.Random
) -> dict[str, Any]:
    if stage == "downloading":
        return {
            "files.audio_file": f"audio/{eid}.mp3",
            "metrics.audio_size": size,
            "metrics.audio_duration": duration,
        }
    if stage == "converting":
        return {
            "files.video_file": f"video/{eid}.mp4",
            "metrics.video_size": int(duration * 24_000),
            "metrics.processing_time": round(seconds, 1),
        }
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    return {"youtube.video_id": "".join(rng.choice(alphabet) for _ in range(11))}


# -- the back-test ---------------------------------------------------------------------------


def load_docs(root: Path) -> list[dict[str, Any]]:
    from hystate import StateManager

    return [e.data for e in StateManager(cwd=root).iter_episodes()]


def _t(stamp: str) -> float:
    return parse_time(stamp).timestamp()


def runs_until(docs: list[dict[str, Any]], until: float | None = None) -> list[predict.Run]:
    runs = []
    for doc in docs:
        metrics = doc["metrics"]
        history = doc["history"]
        for entry, after in itertools.pairwise(history):
            stage = entry["to"]
            if stage in predict.ORDER and after["from"] == stage:
                end = _t(after["at"])
                if until is None or end <= until:
                    runs.append(
                        predict.Run(
                            stage,
                            _t(entry["at"]),
                            end,
                            after["to"] == DONE[stage],
                            metrics["audio_size"],
                            metrics["audio_duration"],
                        )
                    )
    return runs


def snapshot_at(doc: dict[str, Any], when: float, imported: bool) -> predict.Snapshot:
    seen = [h for h in doc["history"] if _t(h["at"]) <= when]
    last = seen[-1]
    attempts = {k: sum(1 for h in seen if h["to"] == s) for s, k in KIND.items()}
    downloaded = any(h["to"] == "downloaded" for h in seen)
    known = imported or downloaded
    metrics = doc["metrics"]
    return predict.Snapshot(
        doc["episode_id"],
        last["to"],
        last["from"] if last["to"] == "failed" else None,
        attempts,
        _t(last["at"]),
        metrics["audio_size"] if known else None,
        metrics["audio_duration"] if known else None,
    )


def work_done_at(doc: dict[str, Any]) -> float | None:
    for entry in doc["history"]:
        if entry["to"] in ("uploaded", "skipped"):
            return _t(entry["at"])
    return None


def backtest(
    docs: list[dict[str, Any]], fraction: float, imported: bool, delay: float = RETRY_DELAY
) -> dict[str, Any]:
    runs = runs_until(docs)
    first = min(r.start for r in runs)
    finish = max(t for d in docs if (t := work_done_at(d)) is not None)
    cut = first + fraction * (finish - first)
    train = [r for r in runs if r.end <= cut]
    test = [r for r in runs if r.start >= cut]
    model = predict.fit(train, MAX_RETRIES, delay, cut)
    plain = predict.fit(train, MAX_RETRIES, delay, cut, features=())
    out: dict[str, Any] = {"fraction": fraction, "train_runs": len(train), "test_runs": len(test)}
    out["durations"] = {
        s: {"model": _duration_errors(model, s, test), "plain": _duration_errors(plain, s, test)}
        for s in predict.ORDER
        if s in model.stages
    }
    out["failure_rate"] = {
        s: {
            "predicted": round(m.failure_rate, 3),
            "observed": round(
                sum(1 for r in test if r.stage == s and not r.ok)
                / max(1, sum(1 for r in test if r.stage == s)),
                3,
            ),
        }
        for s, m in model.stages.items()
    }
    snaps = [snapshot_at(d, cut, imported) for d in docs]
    prediction = forecast.predict(model, snaps, cut)
    final = {d["episode_id"]: d["stage"] for d in docs}
    risks = [(o["risk"], final[o["episode_id"]] == "skipped") for o in prediction["episodes"]]
    out["risk"] = {
        "episodes": len(risks),
        "expected_skips": prediction["expected_skips"],
        "actual_skips": sum(1 for _, s in risks if s),
        "brier": round(statistics.fmean((r - s) ** 2 for r, s in risks), 4) if risks else None,
        "brier_constant": _constant_brier(risks) if risks else None,
    }
    remaining = finish - cut
    out["eta"] = _eta_errors(prediction, cut, finish, remaining, docs)
    return out


def _duration_errors(model: predict.Model, stage: str, test: list[predict.Run]) -> dict[str, Any]:
    m = model.stages[stage]
    ok = [r for r in test if r.stage == stage and r.ok]
    if not ok:
        return {}
    errs, inside = [], 0
    for run in ok:
        value = getattr(run, m.feature) if m.feature else None
        p50, p90, _ = m.quantiles(value)
        errs.append(abs(p50 - run.seconds) / max(run.seconds, 1.0))
        inside += run.seconds <= p90
    return {
        "how": f"line on {m.feature} (r2 {m.r2:.2f})" if m.feature else "distribution",
        "median_abs_pct_error_p50": round(100 * statistics.median(errs), 1),
        "p90_coverage_pct": round(100 * inside / len(ok), 1),
    }


def _constant_brier(risks: list[tuple[float, bool]]) -> float:
    """The Brier score of predicting the same risk for all (their mean): the bar to beat."""
    mean = statistics.fmean(r for r, _ in risks)
    return round(statistics.fmean((mean - s) ** 2 for _, s in risks), 4)


def _eta_errors(
    prediction: dict[str, Any], cut: float, finish: float, remaining: float, docs: list[Any]
) -> dict[str, Any]:
    result: dict[str, Any] = {"remaining_hours_actual": round(remaining / 3600, 2)}
    for key in ("eta_p50", "eta_p90"):
        if prediction[key]:
            predicted = _t(prediction[key]) - cut
            result[f"{key}_hours"] = round(predicted / 3600, 2)
            result[f"{key}_error_pct"] = round(100 * (predicted - remaining) / remaining, 1)
    if prediction["eta_p90"]:
        result["actual_within_p90"] = finish <= _t(prediction["eta_p90"])
    # the throughput estimate `status` had before (summary.estimate_completion): finished
    # episodes per second over the last 7 days, extrapolated
    done = sorted(t for d in docs if (t := work_done_at(d)) is not None and t <= cut)
    left = sum(1 for d in docs if (t := work_done_at(d)) is None or t > cut)
    if len(done) >= 2 and done[-1] > done[0]:
        rate = (len(done) - 1) / (done[-1] - done[0])
        predicted = done[-1] + left / rate - cut
        result["throughput_eta_hours"] = round(predicted / 3600, 2)
        result["throughput_error_pct"] = round(100 * (predicted - remaining) / remaining, 1)
    return result


def render(results: list[dict[str, Any]]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"train on the first {int(r['fraction'] * 100)}% of the time "
            f"({r['train_runs']} runs), test on the rest ({r['test_runs']} runs)"
        )
        for stage, d in r["durations"].items():
            m, p = d["model"], d["plain"]
            if not m:
                continue
            lines.append(
                f"  {stage:<12} {m['how']:<32} p50 error {m['median_abs_pct_error_p50']:>5}% "
                f"(distribution only: {p['median_abs_pct_error_p50']}%), "
                f"within p90 {m['p90_coverage_pct']}%"
            )
        rates = ", ".join(
            f"{s} {v['predicted']:.3f} vs {v['observed']:.3f}" for s, v in r["failure_rate"].items()
        )
        lines.append(f"  failure rate predicted vs seen: {rates}")
        k = r["risk"]
        lines.append(
            f"  risk: {k['episodes']} unfinished, expected skips {k['expected_skips']}, actual "
            f"{k['actual_skips']}; Brier {k['brier']} (same risk for all: {k['brier_constant']})"
        )
        e = r["eta"]
        lines.append(
            f"  ETA: actual {e['remaining_hours_actual']} h left; predicted p50 "
            f"{e.get('eta_p50_hours')} h ({e.get('eta_p50_error_pct')}%), p90 "
            f"{e.get('eta_p90_hours')} h ({e.get('eta_p90_error_pct')}%), within p90: "
            f"{e.get('actual_within_p90')}; throughput method {e.get('throughput_eta_hours')} h "
            f"({e.get('throughput_error_pct')}%)"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2004)
    parser.add_argument("--failure-rate", type=float, default=0.10)
    parser.add_argument("--history", type=Path, help="back-test this state repository instead")
    parser.add_argument(
        "--imported", action="store_true", help="with --history: sizes were known before download"
    )
    parser.add_argument("--keep", type=Path, help="simulate in this folder and keep it")
    parser.add_argument("--stop-after", type=int, help="with --keep: stop after N runs, no test")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    info: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="hystate-predictions-") as scratch:
        if args.history:
            root, imported = args.history.resolve(), args.imported
        else:
            root = args.keep.resolve() if args.keep else Path(scratch) / "sim"
            info = simulate(root, args.workers, args.seed, args.failure_rate, args.stop_after)
            if args.stop_after:
                print(f"stopped after {args.stop_after} runs: {root}")
                return
            imported = info["sizes_from"] != "random"
        docs = load_docs(root)
        delay = RETRY_DELAY
        if args.history:
            from hystate import StateManager

            delay = float(StateManager(cwd=root).config.get("recovery.retry_delay"))
    results = [backtest(docs, q, imported, delay) for q in (0.25, 0.5, 0.75)]
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps({"setup": info, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
