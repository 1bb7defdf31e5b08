"""Convert a public crowd-counting release, laid out as its authors distribute it, into this project's
layout: ``DST/<split>_data/images/<name>``, ``DST/<split>_data/ground_truth/<stem>.txt`` (``x y`` per
line) and ``DST/<split>.list`` with paths relative to ``DST``, so that

    python run_test.py --dataset_file Custom --data_root DST --test_list test.list --weight_path …
    python train.py --dataset_file Custom --data_root DST --train_list train.list --test_list test.list

work on it. Every annotation is checked on the way (points off the image, NaN, a likely (y, x) order);
problems are reported per file and in the summary, and nothing is dropped without a line saying so.

    python tools/prepare_dataset.py --format shanghaitech --src ShanghaiTech/part_A --dst data/SHA
    python tools/prepare_dataset.py --format jhu --src jhu_crowd_v2.0 --dst data/JHU --max_side 2048
    python tools/prepare_dataset.py --format labelme --src my_camera/ --dst data/site --split train --test_every 5

Your own site's labels: ``labelme`` (a folder of pictures with LabelMe JSON files whose ``point`` shapes
are heads) and ``cvat`` (a "CVAT for images 1.1" XML file whose ``points`` elements are heads).
"""
import argparse
import csv
import json
import shutil
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crowd_datasets.annotations import points_outside, read_points  # noqa: E402
from crowd_datasets.image_io import IMAGE_SUFFIXES, ImageReadError, read_rgb, write_rgb  # noqa: E402
from util.script import EXIT_FAILED, EXIT_SKIPPED, error_line, run_script  # noqa: E402

FORMATS = ("shanghaitech", "qnrf", "jhu", "nwpu", "csv", "labelme", "cvat")


@dataclass
class Item:
    """One image of the release: its ``split`` ("train", "val" or "test"; ``None`` where the release does
    not say, for ``--split`` and ``--test_every`` to decide), file, and ``points`` (float64 ``[N, 2]``,
    ``(x, y)`` pixels) read from ``source`` (named in messages)."""

    split: object
    image: Path
    points: np.ndarray
    source: str
    name: str = field(default="")


def images_in(folder: Path) -> list:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def require(folder: Path, layout: str) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"--src: no folder {folder} ({layout})")
    return folder


def shanghaitech_items(src: Path) -> list:
    """ShanghaiTech part A or B: ``{train,test}_data/images/IMG_n.jpg`` with
    ``{train,test}_data/ground-truth/GT_IMG_n.mat`` (the nested ``image_info`` struct)."""
    items = []
    for split in ("train", "test"):
        folder = require(src / f"{split}_data" / "images", "ShanghaiTech: part_A or part_B, with train_data/images")
        for image in images_in(folder):
            annotation = folder.parent / "ground-truth" / f"GT_{image.stem}.mat"
            items.append(Item(split, image, read_points(annotation).astype(np.float64), str(annotation)))
    return items


def qnrf_items(src: Path) -> list:
    """UCF-QNRF: ``Train/img_0001.jpg`` with ``Train/img_0001_ann.mat`` (``annPoints``, N x 2 (x, y)), and ``Test/``."""
    items = []
    for split, folder in (("train", "Train"), ("test", "Test")):
        for image in images_in(require(src / folder, "UCF-QNRF: holding Train/ and Test/")):
            annotation = image.with_name(f"{image.stem}_ann.mat")
            if not annotation.is_file():
                raise FileNotFoundError(f"{annotation}: the annotation of {image.name} is missing")
            points = np.asarray(scipy.io.loadmat(annotation)["annPoints"], dtype=np.float64).reshape(-1, 2)
            items.append(Item(split, image, points, str(annotation)))
    return items


def jhu_items(src: Path) -> list:
    """JHU-Crowd++: ``{train,val,test}/images/0001.jpg`` with ``{train,val,test}/gt/0001.txt``
    (``x y w h o b`` per head)."""
    items = []
    for split in ("train", "val", "test"):
        if split == "val" and not (src / split).is_dir():
            continue
        for image in images_in(require(src / split / "images", "JHU-Crowd++: holding train/, val/ and test/")):
            annotation = src / split / "gt" / f"{image.stem}.txt"
            points = read_points(annotation, allow_nonfinite=True).astype(np.float64)
            items.append(Item(split, image, points, str(annotation)))
    return items


def nwpu_items(src: Path) -> list:
    """NWPU-Crowd: ``images/0001.jpg``, ``jsons/0001.json`` (``points``: ``[[x, y], …]``) and the split
    files ``train.txt`` / ``val.txt`` (first column the image id). Its test labels are not public, so
    ``val`` becomes the test split."""
    items = []
    for split, list_name in (("train", "train.txt"), ("test", "val.txt")):
        listing = src / list_name
        if not listing.is_file():
            raise FileNotFoundError(f"--src: no {listing} (NWPU-Crowd: holding images/, jsons/, train.txt, val.txt)")
        for line in listing.read_text().split("\n"):
            if not line.strip():
                continue
            image_id = line.split()[0]
            images = [p for p in (src / "images").glob(f"{image_id}.*") if p.suffix.lower() in IMAGE_SUFFIXES]
            annotation = src / "jsons" / f"{image_id}.json"
            if not images or not annotation.is_file():
                raise FileNotFoundError(f"{listing}: image {image_id} has no file in images/ or no "
                                        f"jsons/{image_id}.json")
            points = np.asarray(json.loads(annotation.read_text()).get("points", []), dtype=np.float64).reshape(-1, 2)
            items.append(Item(split, images[0], points, str(annotation)))
    return items


def csv_items(src: Path) -> list:
    """A CSV file with a header ``image,x,y`` (and optionally ``split``): one row per head, image paths
    relative to the CSV's folder; an image without heads has one row with empty ``x`` and ``y``."""
    if not src.is_file():
        raise FileNotFoundError(f"--src {src}: no such CSV file (expected a header image,x,y[,split])")
    rows = {}
    with open(src, newline="", encoding="utf-8-sig") as file:
        reader = csv.DictReader(file)
        if not {"image", "x", "y"} <= set(reader.fieldnames or ()):
            raise ValueError(f"--src {src}: the header must name image, x and y (and optionally split), "
                             f"got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            split = (row.get("split") or "").strip() or None
            if split not in ("train", "val", "test", None):
                raise ValueError(f"{src}, line {line}: split must be train, val or test, got {split!r}")
            key = (split, row["image"].strip())
            rows.setdefault(key, [])
            if row["x"].strip() or row["y"].strip():
                rows[key].append((float(row["x"] or "nan"), float(row["y"] or "nan")))
    items = []
    for (split, image), points in rows.items():
        name = image.replace("/", "_").replace("\\", "_")
        items.append(Item(split, src.parent / image, np.asarray(points, dtype=np.float64).reshape(-1, 2),
                          f"{src} ({image})", name))
    return items


def labelme_items(src: Path, say) -> list:
    """A folder of pictures and the LabelMe files (``*.json``, any version) labelling them: each file's
    ``point`` shapes are heads; ``imagePath`` names its picture (relative to the file). Pictures without
    a LabelMe file are left out, with a line naming them."""
    files = sorted(require(src, "LabelMe: a folder of pictures and their .json files").glob("*.json"))
    items, labelled = [], set()
    for path in files:
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
            shapes = content["shapes"]
            image = (path.parent / content.get("imagePath", "")).resolve()
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not a LabelMe file ({error})") from None
        if not image.is_file():
            image = next((p for p in images_in(path.parent) if p.stem == path.stem), None)
            if image is None:
                raise FileNotFoundError(f"{path}: its picture {content.get('imagePath')!r} is not in {path.parent}")
        points = [shape["points"][0] for shape in shapes if shape.get("shape_type") == "point" and shape.get("points")]
        items.append(Item(None, image, np.asarray(points, dtype=np.float64).reshape(-1, 2), str(path)))
        labelled.add(image.resolve())
    unlabelled = [p.name for p in images_in(src) if p.resolve() not in labelled]
    if unlabelled:
        say(f"{src}: {len(unlabelled)} picture(s) without a LabelMe file left out: {', '.join(unlabelled[:5])}"
            + (", ..." if len(unlabelled) > 5 else ""))
    return items


def cvat_items(src: Path) -> list:
    """A "CVAT for images 1.1" XML file: each ``<image name=...>`` with its ``<points points="x,y;x,y">``
    elements as heads; pictures are found by ``name`` beside the file or in its ``images/`` folder."""
    if not src.is_file():
        raise FileNotFoundError(f"--src {src}: no such file (expected the annotations.xml of a CVAT for images "
                                "1.1 export)")
    try:
        root = ElementTree.parse(src).getroot()
    except ElementTree.ParseError as error:
        raise ValueError(f"{src}: not an XML file ({error})") from None
    items = []
    for element in root.iter("image"):
        name = element.get("name", "")
        image = next((path for path in (src.parent / name, src.parent / "images" / name) if path.is_file()), None)
        if image is None:
            raise FileNotFoundError(f"{src}: picture {name!r} is neither beside it nor in images/")
        points = []
        for shape in element.iter("points"):
            try:
                points += [[float(value) for value in pair.split(",")] for pair in shape.get("points", "").split(";")]
            except ValueError:
                raise ValueError(f"{src}: picture {name!r} has points that are not numbers: "
                                 f"{shape.get('points')!r}") from None
        items.append(Item(None, image, np.asarray(points, dtype=np.float64).reshape(-1, 2), f"{src} ({name})",
                          name.replace("/", "_").replace("\\", "_")))
    return items


def assign_splits(items: list, split: str, test_every: int) -> None:
    """Give the items whose release names no split ``split``, except every ``test_every``-th of them (in
    the order of their file names), which go to the test split."""
    undecided = sorted((item for item in items if item.split is None), key=lambda item: str(item.image))
    for position, item in enumerate(undecided, start=1):
        item.split = "test" if test_every and position % test_every == 0 else split


def check_points(item: Item, width: int, height: int, say) -> tuple:
    """The points to write for ``item`` and whether a problem was reported: NaN points are dropped (with
    a line), points off the image are kept and reported, and a likely (y, x) order is reported."""
    problem = False
    finite = np.isfinite(item.points).all(axis=1)
    if not finite.all():
        say(f"{item.source}: dropped {int((~finite).sum())} point(s) that are NaN or infinite")
        problem = True
    points = item.points[finite]
    outside = points_outside(points, width, height)
    if outside:
        problem = True
        if points_outside(points[:, ::-1], width, height) == 0:
            say(f"{item.source}: {outside} of {len(points)} points lie off the {width} x {height} image as (x, y) "
                "but all lie on it as (y, x): the file is likely in (y, x) order; kept as (x, y), please check")
        else:
            say(f"{item.source}: {outside} of {len(points)} points lie off the {width} x {height} image; kept")
    return points, problem


def convert(item: Item, dst: Path, max_side: int, say) -> tuple:
    """Write ``item``'s image (resized when its longer side exceeds ``max_side``) and annotation under
    ``dst``; return ``(list line, points written, problem reported)``."""
    rgb = read_rgb(item.image)
    height, width = rgb.shape[:2]
    points, problem = check_points(item, width, height, say)
    name = item.name or item.image.name
    folder = dst / f"{item.split}_data"
    image_path = folder / "images" / name
    annotation_path = folder / "ground_truth" / f"{Path(name).stem}.txt"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    annotation_path.parent.mkdir(parents=True, exist_ok=True)
    scale = max_side / max(height, width) if max_side and max(height, width) > max_side else 1.0
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        points = points * np.array([size[0] / width, size[1] / height])
        write_rgb(image_path, resized)
    else:
        shutil.copyfile(item.image, image_path)
    np.savetxt(annotation_path, points, fmt="%.9g")  # float32 round-trips exactly
    line = f"{image_path.relative_to(dst).as_posix()} {annotation_path.relative_to(dst).as_posix()}"
    return line, len(points), problem


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--format", required=True, choices=FORMATS, help="layout of --src, as its authors ship it")
    parser.add_argument("--src", required=True, help="the release's folder (for csv: the CSV file)")
    parser.add_argument("--dst", required=True, help="folder to write the converted dataset into")
    parser.add_argument("--max_side", type=int, default=0,
                        help="downsize images whose longer side exceeds this many pixels, with their points "
                             "(1536-2048 is usual for QNRF, JHU and NWPU); 0 keeps every size")
    parser.add_argument("--split", "--csv_split", dest="split", default="test", choices=["train", "val", "test"],
                        help="the split of pictures whose release names none (csv rows without a split column, "
                             "labelme, cvat)")
    parser.add_argument("--test_every", type=int, default=0,
                        help="of those pictures, every N-th (in name order) goes to the test split instead, "
                             "e.g. --split train --test_every 5 for 80 %% train; 0: none")
    parser.add_argument("--overwrite", action="store_true", help="write into a --dst that already holds lists")
    args = parser.parse_args(argv)
    if args.max_side < 0:
        parser.error(f"--max_side must be 0 or positive, got {args.max_side}")
    if args.test_every < 0:
        parser.error(f"--test_every must be 0 or positive, got {args.test_every}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    try:
        if not src.exists():
            raise FileNotFoundError(f"--src {src}: no such file or folder")
        if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
            raise ValueError(f"--dst {dst} lies inside --src {src}; choose a folder outside the release")
        existing = sorted(p.name for p in dst.glob("*.list")) if dst.is_dir() else []
        if existing and not args.overwrite:
            raise ValueError(f"--dst {dst} already holds {', '.join(existing)}; choose another folder or pass "
                             "--overwrite")
        say = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731
        readers = {"shanghaitech": shanghaitech_items, "qnrf": qnrf_items, "jhu": jhu_items, "nwpu": nwpu_items,
                   "csv": csv_items, "labelme": lambda path: labelme_items(path, say), "cvat": cvat_items}
        items = readers[args.format](src)
        assign_splits(items, args.split, args.test_every)
        if not items:
            raise ValueError(f"--src {src}: no images found in the {args.format} layout")
        lines, points, problems = {}, 0, 0
        for item in tqdm(items, desc="converting", unit="img", disable=None):
            line, count, problem = convert(item, dst, args.max_side, say)
            lines.setdefault(item.split, []).append(line)
            points, problems = points + count, problems + problem
    except (OSError, ValueError, KeyError, ImageReadError) as error:
        print(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    for split, split_lines in lines.items():
        (dst / f"{split}.list").write_text("\n".join(split_lines) + "\n")
    # A list of an earlier conversion that this one does not write would still name its pictures: with
    # --overwrite it goes, so that no picture is both in train.list and in a stale test.list.
    for name in existing:
        if Path(name).stem not in lines:
            (dst / name).unlink()
            print(f"removed {dst / name} of the earlier conversion (--overwrite)")
    counts = ", ".join(f"{len(split_lines)} {split}" for split, split_lines in lines.items())
    print(f"converted {counts} images with {points} points into {dst}; {problems} annotation file(s) with "
          f"problems{' (see above)' if problems else ''}; lists: {', '.join(f'{split}.list' for split in lines)}")
    return EXIT_SKIPPED if problems else 0


if __name__ == "__main__":
    run_script(main)
