"""Build webdataset shards from a raw dataset.

    python -m data_pipeline.build_shards --dataset NAME --root DIR --out DIR [options]

NAME: coco, coco_karpathy, flickr30k, vg, vqa, nlvr2, easyvqa (easyvqa needs no --root).
Every image is decoded once here (PIL) and rejected, by kind, if it is corrupt, truncated,
larger than ``--max-image-pixels`` or missing; records without any text are rejected as
``empty_text``; the readers skip bad annotations (see ``data_pipeline.formats``). The counts
go to ``manifest.json``, and per shard every stored image's (w, h), which the epoch plan's aspect
grouping reads. The same inputs and options give byte-identical shards, however many
``--workers`` write them: records are ordered by a fixed seed, each shard is written by one
process, tar headers carry no time or owner.

``--out`` is only ever replaced when it is an earlier build (its manifest lists every file in
it); a new or empty folder is written into; anything else is refused, so a mistyped ``--out``
(the dataset folder itself, a home directory) never loses a file.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import shutil
import socket
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_pipeline.formats import Source, get_reader
from data_pipeline.images import encode_for_shard
from data_pipeline.records import BadSample, DataError, parse_record, units_per_sample
from data_pipeline.shards import FORMAT, MANIFEST, image_slots, load_manifest, sha256_file, write_index, write_tar
from pixelbert.engine.hardware import usable_cores

__all__ = ["build_shards", "main"]


def _counts_fields(tasks: list[str]) -> list[str]:
    return [f for f, t in (("captions", "pretrain"), ("questions", "vqa")) if t in tasks]


def _write_shard(job: dict) -> dict:
    """Validate and write one shard; runs in a worker process."""
    tar_path, items, opts = Path(job["tar"]), job["items"], job["options"]
    slots = image_slots(job["images_per_sample"])
    samples, rejected, counts, sizes = [], {}, {f: [] for f in job["counts"]}, []
    for record, paths in items:
        try:
            components, shape = [], []
            for slot, path in zip(slots, paths):
                try:
                    data = Path(path).read_bytes()
                except OSError:
                    raise BadSample("missing_image", str(path)) from None
                data, ext, size = encode_for_shard(data, opts["max_image_pixels"], opts["resize_shorter"], opts["resize_longer"])
                components.append((slot + ext, data))
                shape += size
        except BadSample as bad:
            rejected[bad.kind] = rejected.get(bad.kind, 0) + 1
            continue
        body = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
        samples.append((record["key"], components + [("json", body)]))
        sizes += shape
        if "captions" in counts:
            counts["captions"].append(sum(1 for c in record.get("captions", []) if c.strip()))
        if "questions" in counts:
            counts["questions"].append(len(record.get("questions", [])))
    result = {"tar": tar_path.name, "samples": len(samples), "rejected": rejected}
    if not samples:
        return result
    rows = write_tar(tar_path, samples)
    idx_path = tar_path.with_suffix(".idx")
    write_index(tar_path, idx_path, rows)
    result.update(index=idx_path.name, sha256=sha256_file(tar_path), bytes=tar_path.stat().st_size, image_sizes=sizes)
    if counts:
        result["counts"] = counts
    return result


def _usable(record: dict, tasks: list[str]) -> None:
    parse_record(record)
    captions = record.get("captions")  # as the loaders judge it: a caption that is not a string is a bad record
    if captions is not None and not (isinstance(captions, list) and all(isinstance(c, str) for c in captions)):
        raise BadSample("bad_record", f"{record['key']}: 'captions' must be a list of strings")
    if not any(units_per_sample(record, t) for t in tasks):
        raise BadSample("empty_text", record["key"])


def _file_info(path: Path, root: Path | None) -> dict:
    try:
        rel = str(path.resolve().relative_to(root.resolve())) if root else str(path)
    except ValueError:
        rel = str(path)
    return {"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _check_out(out: Path) -> None:
    """Raise DataError unless ``out`` is new, an empty folder, or an earlier build: a folder
    whose manifest lists every file in it (so replacing it loses nothing of anyone else's)."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise DataError(f"--out {out}: exists and is not a folder; give a new or empty folder")
    names = {p.name for p in out.iterdir()}
    if not names:
        return
    try:
        manifest = load_manifest(out)
        shards = [sh for split in manifest["splits"].values() for sh in split["shards"]]
        own = {MANIFEST} | {sh[k] for sh in shards for k in ("tar", "index")}
    except (DataError, KeyError, TypeError, AttributeError):
        own = set()
    if not own or names - own:
        other = sorted(names - own)
        raise DataError(f"--out {out}: holds files that are not shards of an earlier build ({', '.join(other[:3])}"
                        f"{', ...' if len(other) > 3 else ''}); give a new or empty folder")


def _scratch(out: Path, what: str) -> Path:
    """A hidden sibling of ``out`` for this process: the build in progress, or the replaced build."""
    return out.parent / f".{out.name}.{what}-{socket.gethostname()}-{os.getpid()}"


def _remove_leftovers(out: Path) -> None:
    """Remove the scratch folders of builds of ``out`` on this machine whose process is gone
    (killed builds); those of running builds, and of other machines sharing the disk, stay.
    Names without a machine are those of builds before the machine was part of the name."""
    host = re.escape(socket.gethostname())
    pattern = re.compile(rf"\.{re.escape(out.name)}\.(?:building|old)-(?:{host}-)?(\d+)")
    for path in out.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and not _running(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (this process does not count)."""
    if pid == os.getpid():  # a folder of ours at the start of a build is a leftover
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _publish(tmp: Path, out: Path, replace: bool) -> None:
    """Move the finished build into place. ``replace=False``: if another process published
    first, keep theirs (builds are deterministic, so both are the same) -- readers of the
    published folder are never disturbed."""
    if not replace:
        try:
            tmp.rename(out)  # fails if out is a non-empty folder
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    _check_out(out)  # again: files may have appeared in it while the shards were written
    old = _scratch(out, "old")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _jobs(source: Source, tmp: Path, options: dict) -> tuple[list[dict], dict[str, dict]]:
    """Shard jobs of every split (records in a fixed shuffled order), and records rejected so far."""
    jobs, rejected, keys = [], {}, set()
    for split in sorted(set(source.splits) | set(source.rejected)):
        rejected[split] = dict(source.rejected.get(split, {}))
        items = []
        for record, paths in source.splits.get(split, []):
            try:
                _usable(record, source.tasks)
            except BadSample as bad:
                rejected[split][bad.kind] = rejected[split].get(bad.kind, 0) + 1
                continue
            # Tar member names are "{key}.{ext}": a dot or a slash in the key would split it.
            record = {**record, "key": re.sub(r"[^A-Za-z0-9_-]", "_", record["key"])}
            if record["key"] in keys:  # the same image twice (or ids that differ only in odd characters)
                rejected[split]["duplicate_id"] = rejected[split].get("duplicate_id", 0) + 1
                continue
            keys.add(record["key"])
            items.append((record, [str(p) for p in paths]))
        # A fixed shuffle spreads the source order (often sorted by id) over the shards.
        items = [items[i] for i in np.random.default_rng(options["seed"]).permutation(len(items))]
        size = options["shard_size"]
        for n, start in enumerate(range(0, len(items), size)):
            jobs.append({"split": split, "tar": str(tmp / f"{split}-{n:06d}.tar"), "items": items[start:start + size],
                         "options": options, "images_per_sample": source.images_per_sample,
                         "counts": _counts_fields(source.tasks)})
    return jobs, rejected


def _run(jobs: list[dict], workers: int | None, progress: bool, label: str) -> list[dict]:
    """Write the shards, in parallel when asked; results in job order whatever finishes first."""
    results: list = [None] * len(jobs)
    workers = min(workers or usable_cores(), len(jobs))
    with tqdm(total=sum(len(j["items"]) for j in jobs), desc=label, unit="sample", disable=not progress) as bar:
        if workers <= 1:
            for i, job in enumerate(jobs):
                results[i] = _write_shard(job)
                bar.update(len(job["items"]))
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_write_shard, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(len(jobs[futures[fut]]["items"]))
    return results


def _splits(jobs: list[dict], results: list[dict], rejected: dict[str, dict], where: str) -> dict:
    """Per split: samples, rejected by kind, shards; a split left without samples is an error."""
    splits = {name: {"samples": 0, "rejected": counts, "shards": []} for name, counts in rejected.items()}
    for job, res in zip(jobs, results):
        split = splits[job["split"]]
        for kind, n in res.pop("rejected").items():
            split["rejected"][kind] = split["rejected"].get(kind, 0) + n
        if res["samples"]:
            split["samples"] += res["samples"]
            split["shards"].append(res)
    if not splits:
        raise DataError(f"{where}: no samples found")
    for name, split in sorted(splits.items()):
        if not split["samples"]:
            raise DataError(f"{where}: split {name!r} has no usable sample (rejected: {split['rejected'] or 'none'})")
    return splits


def _write_manifest(path: Path, manifest: dict) -> None:
    text = json.dumps(manifest, indent=1, sort_keys=True)
    # Per-sample count lists on one line each: readable, and 10x smaller for big datasets.
    text = re.sub(r"\[([\d,\s]+)\]", lambda m: "[" + re.sub(r"\s+", "", m.group(1)) + "]", text)
    path.write_text(text + "\n")


def build_shards(
    dataset: str,
    root: str | Path | None,
    out: str | Path,
    *,
    shard_size: int = 1000,
    workers: int | None = None,
    resize_shorter: int | None = None,
    resize_longer: int | None = None,
    max_image_pixels: int = 50_000_000,
    seed: int = 0,
    progress: bool = True,
    replace: bool = True,
    **reader_options,
) -> dict:
    """Read ``dataset`` from ``root``, write shards + indexes + manifest to ``out``; return the manifest.

    ``workers``: processes writing shards (default: all CPUs). ``resize_shorter`` /
    ``resize_longer``: optional pre-resize (only ever shrinks). ``replace``: replace an
    earlier build in ``out`` (else keep it); ``out`` holding anything else is a DataError,
    raised before any work. ``reader_options`` go to the reader
    (``top_answers`` for vqa, ``val_fraction`` for easyvqa, ``exclude_coco_karpathy`` for vg).
    """
    reader = get_reader(dataset)
    for name in reader_options:
        if name not in inspect.signature(reader).parameters:
            raise DataError(f"option {name!r} does not apply to dataset {dataset!r}")
    if root is None and dataset != "easyvqa":
        raise DataError(f"dataset {dataset!r} needs --root (the folder with the downloaded files)")
    if root is not None and not Path(root).is_dir():
        raise DataError(f"{root}: no such folder")
    sizes = {"--shard-size": shard_size, "--workers": workers, "--resize-shorter": resize_shorter,
             "--resize-longer": resize_longer, "--max-image-pixels": max_image_pixels,
             "--top-answers": reader_options.get("top_answers")}
    for option, value in sizes.items():  # None: not given (the default)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise DataError(f"{option} must be an integer >= 1, got {value!r}")
    if resize_longer is not None and resize_shorter is None:
        raise DataError("--resize-longer needs --resize-shorter")
    if resize_longer is not None and resize_longer < resize_shorter:
        raise DataError(f"--resize-longer must be >= --resize-shorter ({resize_shorter}), got {resize_longer}")
    out = Path(out)
    _check_out(out)
    source: Source = reader(root, **reader_options)
    options = {"shard_size": shard_size, "seed": seed, "resize_shorter": resize_shorter,
               "resize_longer": resize_longer, "max_image_pixels": max_image_pixels, **source.options}
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    tmp = _scratch(out, "building")
    tmp.mkdir()
    try:
        jobs, rejected = _jobs(source, tmp, options)
        results = _run(jobs, workers, progress, f"build {dataset}")
        splits = _splits(jobs, results, rejected, f"{dataset} under {root or 'the easy-vqa package'}")
        totals = dict(source.rejected_without_split)
        for split in splits.values():
            for kind, n in split["rejected"].items():
                totals[kind] = totals.get(kind, 0) + n
        manifest = {
            "format": FORMAT,
            "dataset": dataset,
            "tasks": source.tasks,
            "images_per_sample": source.images_per_sample,
            "answers": source.answers,
            "source": {"root": None if root is None else str(Path(root).resolve()),
                       "files": [_file_info(Path(p), None if root is None else Path(root)) for p in source.files]},
            "options": options,
            "splits": splits,
            "rejected": totals,
        }
        if source.rejected_without_split:  # records whose split was unusable: in the totals only
            manifest["rejected_without_split"] = source.rejected_without_split
        _write_manifest(tmp / MANIFEST, manifest)
        _publish(tmp, out, replace)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m data_pipeline.build_shards", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="coco, coco_karpathy, flickr30k, vg, vqa, nlvr2, easyvqa")
    p.add_argument("--root", help="folder with the downloaded files (easyvqa: default the installed package)")
    p.add_argument("--out", required=True,
                   help="output folder: new, empty, or an earlier build (replaced when the build succeeds)")
    p.add_argument("--shard-size", type=int, default=1000, help="records (images) per shard")
    p.add_argument("--workers", type=int, default=None, help="processes writing shards (default: all CPUs)")
    p.add_argument("--resize-shorter", type=int, help="pre-resize: shorter side at most this (e.g. 800)")
    p.add_argument("--resize-longer", type=int, help="pre-resize: longer side at most this (e.g. 1333)")
    p.add_argument("--max-image-pixels", type=int, default=50_000_000, help="reject larger images")
    p.add_argument("--seed", type=int, default=0, help="seed of the record order inside the shards")
    p.add_argument("--top-answers", type=int, help="vqa: answer vocabulary size (default 3129)")
    p.add_argument("--val-fraction", type=float, help="easyvqa: share of train images held out as val (default 0.1)")
    p.add_argument("--exclude-coco-karpathy", help="vg: dataset_coco.json whose val/test images are left out")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    extra = {k: v for k, v in (("top_answers", a.top_answers), ("val_fraction", a.val_fraction),
                               ("exclude_coco_karpathy", a.exclude_coco_karpathy)) if v is not None}
    try:
        manifest = build_shards(a.dataset, a.root, a.out, shard_size=a.shard_size, workers=a.workers,
                                resize_shorter=a.resize_shorter, resize_longer=a.resize_longer,
                                max_image_pixels=a.max_image_pixels, seed=a.seed, progress=not a.no_progress, **extra)
    except DataError as e:
        print(f"build_shards: {e}", file=sys.stderr)
        return 2
    for name, split in manifest["splits"].items():
        print(f"{name}: {split['samples']} samples in {len(split['shards'])} shards, rejected {split['rejected'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
