"""Deterministic synthetic Sparkify data in the exact shape of the course files, at any scale.

    python bench/generate.py --events 1000000 --songs 20000 --seed 42 --out bench/out/data-1m

song_data/A/B/C/TR*.json: one song object per file, nested A/B/C folders as in the
Million Song Dataset sample; log_data/2018/11/2018-11-DD-events.json: one event per line,
one file per day. Most events are NextSong; --match-share of them name a catalogue song
exactly; users upgrade from free to paid; text includes unicode, quotes and backslashes.
Writes manifest.json with the row counts a correct load must give. Same seed, same bytes.
"""
import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

FIRST = ["Ann", "Björn", "Chloé", "Dmitri", "Eun-ji", "Farah", "Giulia", "Hiro", "Ines", "Jamal", "Kate", "Lior"]
LAST = ["Lee", "O'Brien", "Müller", "Nakamura", "García", "Smith", "Kowalski", "Nguyen", "Dubois", "Okafor"]
PLACES = ["San Francisco-Oakland-Hayward, CA", "Portland-South Portland, ME", "Lansing-East Lansing, MI",
          "Chicago-Naperville-Elgin, IL-IN-WI", "Atlanta-Sandy Springs-Roswell, GA", "Tampa-St. Petersburg-Clearwater, FL"]
AGENTS = ['"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_4) AppleWebKit/537.78.2 (KHTML, like Gecko) '
          'Version/7.0.6 Safari/537.78.2"',
          "Mozilla/5.0 (Windows NT 6.1; WOW64; rv:31.0) Gecko/20100101 Firefox/31.0",
          '"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/36.0.1985.143 Safari/537.36"']
WORDS = ["Love", "Night", "Fire", "Río", "Cœur", "Dream", "Back\\slash", '"Quoted"', "Ça va", "夜", "Gone", "Ölüm"]
OTHER_PAGES = ["Home", "Home", "Logout", "Settings", "About", "Help", "Upgrade", "Downgrade", "Add to Playlist"]
DAY_MS = 86_400_000
START_MS = 1541030400000  # 2018-11-01 00:00:00 UTC


def name(rng, words=2):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def make_catalogue(rng, songs):
    artists = []
    for i in range(max(1, songs // 3)):
        located = rng.random() < 0.6
        artists.append({"artist_id": f"AR{i:08d}{rng.randrange(16**8):08X}",
                        "artist_latitude": round(rng.uniform(-60, 60), 5) if located else None,
                        "artist_longitude": round(rng.uniform(-150, 150), 5) if located else None,
                        "artist_location": rng.choice(PLACES) if located else "",
                        "artist_name": f"{name(rng)} {i}"})
    catalogue = []
    for i in range(songs):
        a = artists[i % len(artists)]
        catalogue.append({"num_songs": 1, **a, "song_id": f"SO{i:08d}{rng.randrange(16**8):08X}",
                          "title": f"{name(rng, 3)} #{i}", "duration": round(rng.uniform(60, 600), 5),
                          "year": rng.choice([0, rng.randint(1960, 2018)])})
    return artists, catalogue


def write_songs(out, catalogue, rng):
    for song in catalogue:
        letters = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
        folder = out / "song_data" / letters[0] / letters[1] / letters[2]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"TR{letters}{song['song_id'][2:]}.json").write_text(json.dumps(song))


def make_users(rng, n):
    return [{"userId": str(i + 1), "firstName": rng.choice(FIRST), "lastName": rng.choice(LAST),
             "gender": rng.choice("MF"), "location": rng.choice(PLACES), "userAgent": rng.choice(AGENTS),
             "registration": float(START_MS - rng.randrange(90 * DAY_MS)),
             "upgrade_at": rng.randrange(START_MS, START_MS + 40 * DAY_MS) if rng.random() < 0.4 else None}
            for i in range(n)]


def event_lines(rng, users, catalogue, events, days, match_share, counts):
    """Yield (day, JSON line) in time order; tally what a correct load must contain."""
    per_day = [events // days + (1 if d < events % days else 0) for d in range(days)]
    session, play_times = 0, set()
    for day, n in enumerate(per_day):
        spacing = DAY_MS / max(n, 1)
        j = 0
        while j < n:
            session += 1
            user = rng.choice(users)
            logged_out = rng.random() < 0.01
            for item in range(min(rng.randint(1, 40), n - j)):
                ts = START_MS + day * DAY_MS + int(j * spacing) + rng.randrange(1000)
                j += 1
                page = "NextSong" if rng.random() < 0.82 and not logged_out else rng.choice(OTHER_PAGES)
                song = artist = length = None
                if page == "NextSong":
                    if rng.random() < match_share:
                        s = rng.choice(catalogue)
                        song, artist, length = s["title"], s["artist_name"], s["duration"]
                        counts["matched"] += 1
                    else:
                        song, artist = f"Unlisted {name(rng)}", f"{name(rng, 1)} band"
                        length = round(rng.uniform(60, 600), 5)
                    counts["songplays"] += 1
                    play_times.add(ts)
                paid = user["upgrade_at"] is not None and ts >= user["upgrade_at"]
                e = {"artist": artist, "auth": "Logged Out" if logged_out else "Logged In",
                     "firstName": None if logged_out else user["firstName"],
                     "gender": None if logged_out else user["gender"], "itemInSession": item,
                     "lastName": None if logged_out else user["lastName"], "length": length,
                     "level": "paid" if paid else "free", "location": None if logged_out else user["location"],
                     "method": "PUT" if page == "NextSong" else "GET", "page": page,
                     "registration": None if logged_out else user["registration"], "sessionId": session,
                     "song": song, "status": 200, "ts": ts,
                     "userAgent": None if logged_out else user["userAgent"],
                     "userId": "" if logged_out else user["userId"]}
                if not logged_out:
                    counts["user_ids"].add(user["userId"])
                yield day, json.dumps(e, separators=(",", ":")).replace("/", "\\/")
    counts["time"] = len(play_times)


def generate(out, events, songs, seed=42, match_share=0.3, days=30):
    """Write the data set under out; return the manifest (what a correct load gives)."""
    rng = random.Random(seed)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    artists, catalogue = make_catalogue(rng, songs)
    write_songs(out, catalogue, rng)
    users = make_users(rng, max(20, events // 80))
    counts = {"matched": 0, "songplays": 0, "user_ids": set()}
    logs = out / "log_data" / "2018" / "11"
    logs.mkdir(parents=True)
    current, handle = None, None
    for day, line in event_lines(rng, users, catalogue, events, days, match_share, counts):
        if day != current:
            if handle:
                handle.close()
            current = day
            handle = open(logs / f"2018-11-{day + 1:02d}-events.json", "w", encoding="utf-8", newline="\n")
        else:
            handle.write("\n")  # like the course files: no newline after the last line
        handle.write(line)
    if handle:
        handle.close()
    manifest = {"events": events, "songs": songs, "seed": seed, "match_share": match_share, "days": days,
                "expected": {"staging_events": events, "staging_songs": songs,
                             "songplays": counts["songplays"], "users": len(counts["user_ids"]),
                             "songs": songs, "artists": len(artists), "time": counts["time"],
                             "matched": counts["matched"]}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--songs", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--match-share", type=float, default=0.3, help="share of plays naming a catalogue song")
    p.add_argument("--days", type=int, default=30, choices=range(1, 31), metavar="1..30")
    p.add_argument("--out", default="bench/out/data")
    args = p.parse_args(argv)
    started = time.monotonic()
    manifest = generate(args.out, args.events, args.songs, args.seed, args.match_share, args.days)
    print(f"{args.out}: {args.events:,} events, {args.songs:,} song files in "
          f"{time.monotonic() - started:.1f} s; expected {manifest['expected']}")


if __name__ == "__main__":
    sys.exit(main())
