"""The paper's table in one command: evaluate each released checkpoint on its dataset's test split and print,
per dataset, the images, MAE and MSE beside the published ones and the difference.

    python tools/reproduce.py --data_root /data/dehaze
    python tools/reproduce.py --data_root /data/dehaze --datasets Hazy_JHU Hazy_SHTB --markdown --json table.json

Each evaluation is ``run_test.py --dataset_file <dataset> --weight_path <checkpoint>``, run in this process; its
lines and progress go to stderr, so that stdout holds the table alone. A dataset missing under ``--data_root`` is
one line saying where to download it, a checkpoint that cannot be downloaded one line too, and the run goes on
with the others. Exit codes (util/script.py): 0 when every dataset found was evaluated; EXIT_SKIPPED (3) when
some found were not (each named) and others were; EXIT_FAILED (1) when none was evaluated, none found
included; EXIT_INTERRUPTED (130) on Ctrl-C.
"""
import contextlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import run_test  # noqa: E402
from crowd_datasets.layout import UPSTREAM_LISTS_HINT, find_samples, image_folder_candidates, list_file  # noqa: E402
from crowd_datasets.registry import ALIASES, canonical_name, get_entry  # noqa: E402
from inference.outputs import say  # noqa: E402
from models.checkpoint import CheckpointError  # noqa: E402
from models.releases import resolve_checkpoint  # noqa: E402
from options import add_counting_arguments, add_runtime_arguments  # noqa: E402
from util.distributed import resolve_device  # noqa: E402
from util.script import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_SKIPPED, check_output_dir, error_line,  # noqa: E402
                         run_script)
from util.values import at_least, new_parser  # noqa: E402


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's table: the released ``checkpoint`` (a ``models.releases`` name) evaluated on the
    test split of ``dataset`` (a registry name), its published ``mae`` and ``mse`` (people per image; "MSE" is
    the root of the mean squared error, as the field reports it), and ``downloads``: ``(site, URL)`` pairs where
    the dataset's images are published (docs/datasets.md's table of datasets lists the same links)."""

    dataset: str
    checkpoint: str
    mae: float
    mse: float
    downloads: tuple


# Part A and part B are one download.
HAZY_SHANGHAITECH = (("Google", "https://drive.google.com/file/d/1ibvFlZ-sdd_A6xEI1cFuXk4_hHf409Mt/view?usp=sharing"),
                     ("Baidu", "https://pan.baidu.com/s/197CyDnxarjCL3O66yIfNwQ?pwd=jky9"))
# The pairs and numbers of the paper (ICME 2024), in its order; the one place this project keeps its download links.
PAPER_TABLE = {row.dataset: row for row in (
    PaperRow("Hazy_JHU", "Hazy_JHU", 62.96, 149.86,
             (("Google", "https://drive.google.com/file/d/1rLQ_oXHFAUqaYktk-3OFpHHk7uohEcNt/view?usp=sharing"),
              ("Baidu", "https://pan.baidu.com/s/1YZuWGhxZGyFmwVRntamCvA?pwd=xhcm"))),
    PaperRow("Hazy_SHTA", "DH_SHTA", 65.37, 101.3, HAZY_SHANGHAITECH),
    PaperRow("Hazy_SHTB", "DH_SHTB", 7.72, 13.45, HAZY_SHANGHAITECH),
    PaperRow("Hazy_SHARGBD", "Hazy_SHTRGBD", 8.48, 12.61,
             (("Google", "https://drive.google.com/file/d/1rJD9IBuKA1Nhm-Ek3yDe-8V11CLKZnaG/view?usp=drive_link"),)),
    PaperRow("Rainy_SHARGBD", "Rainy_SHTRGBD", 8.71, 13.10,
             (("Google", "https://drive.google.com/file/d/1uCeHtVO1_Mnc3KnOKzLd0JyOUhzzKKNo/view?usp=sharing"),)),
)}

# What became of a dataset: the table's images column shows the word for the rows that were not evaluated.
EVALUATED, MISSING, NO_CHECKPOINT, FAILED = "evaluated", "missing", "no checkpoint", "failed"
COLUMNS = ("dataset", "checkpoint", "images", "MAE", "MSE", "paper MAE", "paper MSE", "MAE diff", "MSE diff")


@dataclass
class Outcome:
    """What one row's run gave: ``status`` (``EVALUATED`` and the others above), ``metrics`` (the evaluation's
    ``--metrics_json`` object, when evaluated) or ``note`` (the one line saying why it was not)."""

    paper: PaperRow
    status: str
    metrics: dict = None
    note: str = None


def build_parser():
    parser = new_parser("Evaluate each released checkpoint on its dataset's test split and print the paper's "
                        "table: images, MAE and MSE beside the published numbers and the difference.")
    runtime = add_runtime_arguments(parser)
    add_counting_arguments(runtime)
    group = parser.add_argument_group("data and outputs")
    group.add_argument("--data_root", required=True,
                       help="folder holding the datasets as docs/datasets.md lays them out (datasets/<Name>/..., "
                            "crowd_datasets/<Name>/...); those missing are named with where to download them")
    group.add_argument("--datasets", nargs="+", type=canonical_name, choices=list(PAPER_TABLE), metavar="NAME",
                       help="evaluate only these, in this order, of " + ", ".join(PAPER_TABLE) + " (also "
                            + ", ".join(f"{alias} for {name}" for alias, name in ALIASES.items())
                            + ", as the checkpoints spell them; default: all, in the paper's order)")
    group.add_argument("--num_workers", type=at_least(0), default=2, help="data loading processes")
    group.add_argument("--output_dir", default=None,
                       help="also keep, in <output_dir>/<dataset>/, what run_test.py writes for a dataset: "
                            "per_image.csv, counts.png, predictions/, truth/, and metrics.json (every metric)")
    group.add_argument("--markdown", action="store_true", help="print the table as Markdown (for docs)")
    group.add_argument("--json", default=None, metavar="FILE",
                       help="also write the table, with each evaluation's every metric, to this JSON file")
    return parser


def dataset_present(dataset: str, data_root: Path) -> bool:
    """Whether ``data_root`` has the test split of ``dataset`` in either layout (upstream's list file or a plain
    image folder); what it holds is checked later, by the evaluation's own search."""
    entry = get_entry(dataset)
    candidates = [list_file(data_root, entry, "test"), *image_folder_candidates(data_root, entry, "test")]
    return any(path.exists() for path in candidates)


def missing_line(paper: PaperRow, data_root: Path) -> str:
    """The one line naming a dataset that is not under ``data_root``, where its files go and where to get them."""
    entry = get_entry(paper.dataset)
    links = " or ".join(f"{site} {url}" for site, url in paper.downloads)
    return (f"{paper.dataset}: not found under --data_root {data_root} (looked for "
            f"{image_folder_candidates(data_root, entry, 'test')[0]} and {list_file(data_root, entry, 'test')}); "
            f"download its images from {links}; {UPSTREAM_LISTS_HINT} (docs/datasets.md)")


def evaluation_argv(args, paper: PaperRow, weights: Path, folder: Path) -> list:
    """run_test.py's command line for one row: the shared flags as given, ``folder``/metrics.json for its
    metrics, and ``folder`` as its ``--output_dir`` when this run keeps outputs."""
    argv = ["--dataset_file", paper.dataset, "--weight_path", str(weights), "--data_root", str(args.data_root),
            "--device", args.device, "--threshold", str(args.threshold), "--tile_size", str(args.tile_size),
            "--max_megapixels", str(args.max_megapixels), "--num_workers", str(args.num_workers),
            "--metrics_json", str(folder / "metrics.json")]
    if args.amp:
        argv.append("--amp")
    if args.output_dir is not None:
        argv += ["--output_dir", str(folder)]
    return argv


def evaluate_row(args, paper: PaperRow, folder: Path) -> Outcome:
    """Evaluate one present dataset with its released checkpoint (downloaded first when not in the cache)."""
    try:
        # The layout's own search first, so that a broken list is one line here rather than inside run_test.py.
        find_samples(paper.dataset, "test", args.data_root)
    except (OSError, ValueError) as error:
        return Outcome(paper, FAILED, note=f"{paper.dataset}: {error_line(error)}")
    try:
        weights = resolve_checkpoint(paper.checkpoint, log=lambda line: say(line, file=sys.stderr))
    except (OSError, CheckpointError) as error:
        return Outcome(paper, NO_CHECKPOINT, note=f"{paper.dataset}: {error_line(error)}")
    say(f"{paper.dataset}: evaluating {paper.checkpoint} ({weights})", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is the table's
        code = run_test.main(evaluation_argv(args, paper, weights, folder))
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt
    if code != 0:
        return Outcome(paper, FAILED, note=f"{paper.dataset}: run_test.py ended with exit code {code} (its error "
                                           "is above)")
    return Outcome(paper, EVALUATED, metrics=json.loads((folder / "metrics.json").read_text(encoding="utf-8")))


def run_rows(args, work_dir: Path) -> list:
    """Every requested row's ``Outcome``, in the order asked. Missing datasets are named first, before any
    evaluation, so that their lines do not wait behind hours of the others'."""
    data_root = Path(args.data_root)
    outcomes = {dataset: Outcome(PAPER_TABLE[dataset], MISSING, note=missing_line(PAPER_TABLE[dataset], data_root))
                for dataset in args.datasets if not dataset_present(dataset, data_root)}
    for outcome in outcomes.values():
        say(outcome.note, file=sys.stderr)
    for dataset in args.datasets:
        if dataset not in outcomes:
            outcomes[dataset] = outcome = evaluate_row(args, PAPER_TABLE[dataset], work_dir / dataset)
            if outcome.note:
                say(outcome.note, file=sys.stderr)
    return [outcomes[dataset] for dataset in args.datasets]


def differences(outcome: Outcome) -> dict:
    """The row's measured numbers and their differences from the paper's (measured minus published), or
    ``None`` each when it was not evaluated."""
    if outcome.status != EVALUATED:
        return dict.fromkeys(("images", "mae", "mse", "mae_diff", "mse_diff"))
    mae, mse = outcome.metrics["mae"], outcome.metrics["mse"]
    return {"images": outcome.metrics["images"], "mae": mae, "mse": mse, "mae_diff": mae - outcome.paper.mae,
            "mse_diff": mse - outcome.paper.mse}


def table_cells(outcome: Outcome) -> list:
    """One row of the printed table, two decimals as the paper gives them."""
    paper, values = outcome.paper, differences(outcome)
    published = [f"{paper.mae:.2f}", f"{paper.mse:.2f}"]
    if outcome.status != EVALUATED:
        return [paper.dataset, paper.checkpoint, outcome.status, "-", "-", *published, "-", "-"]
    return [paper.dataset, paper.checkpoint, str(values["images"]), f"{values['mae']:.2f}", f"{values['mse']:.2f}",
            *published, f"{values['mae_diff']:+.2f}", f"{values['mse_diff']:+.2f}"]


def format_table(rows: list, markdown: bool) -> list:
    """The lines of the table of ``rows`` (lists of cells): Markdown, or columns padded with spaces (names
    left-aligned, numbers right-aligned)."""
    if markdown:
        return ["| " + " | ".join(cells) + " |" for cells in [list(COLUMNS), ["---"] * len(COLUMNS), *rows]]
    widths = [max(len(cells[column]) for cells in [COLUMNS, *rows]) for column in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(width) if column < 2 else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(cells, widths))).rstrip()
            for cells in [COLUMNS, *rows]]


def table_json(args, outcomes: list) -> dict:
    """The table as one JSON object: the settings, and per row the pair, status, measured and published
    numbers, differences, the note of a row not evaluated and every metric of one that was."""
    rows = [{"dataset": outcome.paper.dataset, "checkpoint": outcome.paper.checkpoint, "status": outcome.status,
             **differences(outcome), "paper_mae": outcome.paper.mae, "paper_mse": outcome.paper.mse,
             "note": outcome.note, "metrics": outcome.metrics} for outcome in outcomes]
    return {"data_root": str(args.data_root), "device": args.device, "amp": args.amp, "threshold": args.threshold,
            "rows": rows}


def write_json(value: dict, path: Path) -> None:
    """``value`` as JSON at ``path``, written whole and then moved into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)


def exit_code(outcomes: list) -> int:
    """0 when every dataset found was evaluated; EXIT_SKIPPED when some were not but others were; EXIT_FAILED
    when none was evaluated (none found included)."""
    evaluated = sum(outcome.status == EVALUATED for outcome in outcomes)
    if evaluated == 0:
        return EXIT_FAILED
    return EXIT_SKIPPED if any(outcome.status in (NO_CHECKPOINT, FAILED) for outcome in outcomes) else 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.datasets = list(dict.fromkeys(args.datasets or PAPER_TABLE))
    if not Path(args.data_root).is_dir():
        parser.error(f"--data_root {args.data_root}: no such folder")
    if args.json is not None and Path(args.json).is_dir():
        parser.error(f"--json {args.json} is a folder; expected a file name")
    try:
        resolve_device(args.device)  # a missing CUDA device is one line before any download
        if args.output_dir is not None:
            check_output_dir(Path(args.output_dir), subfolders=tuple(PAPER_TABLE))
        with tempfile.TemporaryDirectory(prefix="reproduce-") as scratch:
            outcomes = run_rows(args, Path(args.output_dir or scratch))
        for line in format_table([table_cells(outcome) for outcome in outcomes], markdown=args.markdown):
            say(line)
        if args.json is not None:
            write_json(table_json(args, outcomes), Path(args.json))
    except (OSError, ValueError, RuntimeError) as error:
        say(f"error: {error_line(error)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        say("stopped by Ctrl-C; no table", file=sys.stderr)
        return EXIT_INTERRUPTED
    if all(outcome.status == MISSING for outcome in outcomes):
        say(f"none of the datasets is under --data_root {args.data_root}; nothing was evaluated", file=sys.stderr)
    return exit_code(outcomes)


if __name__ == "__main__":
    run_script(main)
