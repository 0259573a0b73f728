"""The training tasks: one module each (`detector`, `classifier`, `landmarks`, `gmae_finetune`).

Each has one config dataclass, a stage function `train_<task>(cfg, logger=None) -> TrainResult`
and a `main(argv) -> int` CLI; `components.train` dispatches `--task` to them. What they share
(the run config, config resolution, the Lightning run) is `shared.training.run`; the dataset
splits they read are `shared.data.splits`.
"""
