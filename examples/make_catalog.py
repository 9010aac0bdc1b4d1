"""Write examples/catalog.json: twelve real episodes from the project's own processed/ folder
(the four of spring 2004 the docs use, then the first episode of every other year), in the
archive.org advancedsearch JSON shape that `hystate discover --from` reads.

    python examples/make_catalog.py        # from the repository's root
"""

import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "examples" / "catalog.json"


def chosen() -> list[Path]:
    years = sorted(p for p in (ROOT / "processed").iterdir() if p.is_dir())
    files = sorted(years[0].glob("*.yaml"))[:4]
    files += [sorted(year.glob("*.yaml"))[0] for year in years[1:]][::2][:8]
    return files


def main() -> None:
    docs = []
    for path in chosen():
        episode = yaml.safe_load(path.read_text(encoding="utf-8"))
        docs.append(
            {
                "identifier": episode["archive_identifier"],
                "title": episode["title"],
                "date": f"{episode['date']}T00:00:00Z",
            }
        )
    search = {
        "responseHeader": {
            "status": 0,
            "params": {
                "query": "collection:hooting-yard",
                "fields": "identifier,title,date",
                "sort": "date asc",
            },
        },
        "response": {"numFound": len(docs), "start": 0, "docs": docs},
    }
    OUT.write_text(json.dumps(search, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(docs)} episodes")


if __name__ == "__main__":
    main()
