"""kit.json: the hash of the kit's code, whether the kit on disk can be trusted (group by group),
and the manifest itself, written last.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from road_ds.atomic import file_hash
from road_ds.kit.sources import ARCHIVES, GROUP_ORDER, GROUP_OUTPUTS, KIT_VERSION, MANIFEST, SOURCES


def code_sha256() -> str:
    """Hash of the code that builds the kit, every .py file of road_ds/kit/ (names and contents, in
    sorted order): a kit built by other code is rebuilt (and verified)."""
    package = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")):
        h.update(rel.encode("utf-8") + b"\0")
        h.update((package / rel).read_bytes())
    return h.hexdigest()


def _read_manifest(kit: Path) -> tuple[dict | None, str]:
    """``(manifest, "")`` when it can be trusted, else ``(None, why not)``."""
    path = kit / MANIFEST
    if not path.exists():
        return None, "no kit.json"
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"kit.json is unreadable ({exc.__class__.__name__})"
    if not isinstance(m, dict) or m.get("kit_version") != KIT_VERSION:
        return None, "kit.json is from another kit version"
    pins = {k: a.sha256 for k, a in ARCHIVES.items()}
    if {k: v.get("sha256") for k, v in (m.get("archives") or {}).items()} != pins:
        return None, "kit.json names other archives than the pinned ones"
    if not isinstance(m.get("files"), dict) or not isinstance(m.get("groups"), dict):
        return None, "kit.json lacks files/groups"
    if m.get("code_sha256") != code_sha256():
        return None, "the kit code changed since kit.json was written"
    return m, ""


def _group_ok(kit: Path, manifest: dict | None, group: str) -> bool:
    if manifest is None:
        return False
    entry = manifest["groups"].get(group)
    if not isinstance(entry, dict):
        return False
    files = entry.get("files") or []
    if not set(GROUP_OUTPUTS[group]) <= set(files):
        return False
    for rel in files:
        rec = manifest["files"].get(rel)
        p = kit / rel
        if not rec or not p.is_file() or p.stat().st_size != rec.get("bytes"):
            return False
        if file_hash(p) != rec.get("sha256"):
            return False
    return True


def _manifest(groups: dict[str, dict], files: dict[str, dict]) -> dict:
    counts = {}
    for g in GROUP_ORDER:
        counts.update(groups[g]["counts"])
    sources = {}
    for g in GROUP_ORDER:
        s = dict(SOURCES[g])
        a = ARCHIVES[s["archive"]]
        s.update(package=a.package, version=a.version, archive=a.filename, archive_sha256=a.sha256)
        if "member_sha256" in groups[g]["info"]:
            s["member_sha256"] = groups[g]["info"]["member_sha256"]
        sources[g] = s
    l3 = groups["minilm-l3"]["info"]
    return {
        "kit_version": KIT_VERSION,
        "generator": "road_ds.kit",
        "code_sha256": code_sha256(),
        "archives": {k: {"package": a.package, "version": a.version, "filename": a.filename,
                         "sha256": a.sha256, "kind": a.kind} for k, a in ARCHIVES.items()},
        "sources": sources,
        "counts": counts,
        "files": {rel: {**files[rel], **({"rows": counts[rel]} if rel in counts else {})}
                  for rel in sorted(files)},
        "minilm_l3_check": l3.get("check"),
        "groups": {g: {"files": groups[g]["files"], "counts": groups[g]["counts"],
                       "info": groups[g]["info"]} for g in GROUP_ORDER},
        "note": ("the data are other people's, under the licences in `sources`: keep the kit out of "
                 "git and pass it on only as those licences allow."),
    }
