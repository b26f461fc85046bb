"""Flags of every learned method (data and outputs, training, evaluation, self-labelling), made from their configs."""
from experiments import common
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import self_label
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.training import loop

common.define(run_config.RunConfig)
common.define(loop.TrainConfig)
common.define(protocol.EvalConfig)
common.define(self_label.SelfLabelConfig, self_label.SelfLabelConfig.PREFIX)


def experiment(method: str, method_config) -> run_config.Experiment:
  """The experiment the parsed flags describe, validated as a whole (one-line ValueError otherwise)."""
  built = run_config.Experiment(
      method, common.build(run_config.RunConfig), common.build(loop.TrainConfig), common.build(protocol.EvalConfig),
      common.build(self_label.SelfLabelConfig, self_label.SelfLabelConfig.PREFIX), method_config)
  built.validate()
  return built
