"""Training entry point: `python -m components.train --task TASK ...`.

TASK is one of detector, classifier, keypoints, multitask, gmae_finetune.

The task picks a module; every other flag goes to that task's own parser (see
`--task X --help`), so the seed's commands carry over with only the module path
changed. Stage functions for the pipeline are re-exported here, imported lazily.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from shared.errors import run_cli

# task -> "module:function" taking argv and returning an exit code.
TASKS: dict[str, str] = {
    "detector": "components.tasks.detector:main",
    "classifier": "components.tasks.classifier:main",
    "keypoints": "components.tasks.landmarks:main_keypoints",
    "multitask": "components.tasks.landmarks:main_multitask",
    "gmae_finetune": "components.tasks.gmae_finetune:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m components.train", add_help=False,
                                     description="Train a model; `--task X --help` lists that task's flags.")
    parser.add_argument("--task", choices=sorted(TASKS), help="what to train")
    parser.add_argument("-h", "--help", action="store_true", help="this help, or a task's flags with --task")
    args, rest = parser.parse_known_args(argv)
    if args.task is None:
        parser.print_help()
        return 0 if args.help else 2
    if args.help:
        rest.append("--help")
    # Ultralytics decides at import whether it is online; nothing here may reach the network.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    module_name, func = TASKS[args.task].split(":")
    return int(getattr(importlib.import_module(module_name), func)(rest) or 0)


def train_detector(cfg: Any, logger: Any = None) -> Any:
    from components.tasks.detector import train_detector as run

    return run(cfg, logger)


def train_classifier(cfg: Any, logger: Any = None) -> Any:
    from components.tasks.classifier import train_classifier as run

    return run(cfg, logger)


def train_keypoints(cfg: Any, logger: Any = None) -> Any:
    from components.tasks.landmarks import train_keypoints as run

    return run(cfg, logger)


def train_multitask(cfg: Any, logger: Any = None) -> Any:
    from components.tasks.landmarks import train_multitask as run

    return run(cfg, logger)


if __name__ == "__main__":
    run_cli(main)
