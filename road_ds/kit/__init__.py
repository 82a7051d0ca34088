"""The real data kit (``road-ds data fetch``): see road_ds/kit/build.py."""

from road_ds.kit.build import ARCHIVES, KitError, cache_dir, code_sha256, fetch, kit_dir, kit_paths, main, split_sentences

__all__ = ["KitError", "ARCHIVES", "cache_dir", "kit_dir", "kit_paths", "fetch", "split_sentences", "code_sha256", "main"]
