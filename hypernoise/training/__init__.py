"""Training: config, stateless data, atomic checkpoints, the task protocol and the loop."""

from hypernoise.training.config import TrainConfig
from hypernoise.training.task import TrainTask
from hypernoise.training.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "TrainTask", "Trainer", "TrainResult"]
