"""Flags of every learned method (data and outputs, training, evaluation, self-labelling), made from their
configs, and the entry point of a registered method."""

import dataclasses
import sys

from experiments import common
from unsupervised_jax import registry
from unsupervised_jax.evaluation import protocol
from unsupervised_jax.methods import self_label
from unsupervised_jax.runner import config as run_config
from unsupervised_jax.runner import learned
from unsupervised_jax.training import loop

common.define(run_config.RunConfig)
common.define(loop.TrainConfig)
common.define(protocol.EvalConfig)
common.define(self_label.SelfLabelConfig, self_label.SelfLabelConfig.PREFIX)
_DEFINED = set()


def define(method: str) -> registry.Entry:
  """Defines the flags of the registered ``method``'s config (once per process) and sets its training defaults."""
  entry = registry.get(method)
  if method not in _DEFINED:
    common.define(entry.config)
    for name, value in entry.train_defaults.items():
      common.FLAGS.set_default(name, value)
    _DEFINED.add(method)
  return entry


def experiment(method: str, method_config=None) -> run_config.Experiment:
  """The experiment the parsed flags describe, validated as a whole (one-line ValueError otherwise)."""
  if method_config is None:
    method_config = common.build(registry.get(method).config)
  # The method's training defaults for the flags not given (its own even where another method's entry point set
  # the flag's shown default in this process).
  defaults = {
    field.name: registry.get(method).train_defaults.get(field.name, field.default)
    for field in dataclasses.fields(loop.TrainConfig)
    if not common.FLAGS[field.name].present
  }
  if common.FLAGS['num_steps'].present:  # a step count given (a flagfile's child, the command line) wins
    if common.FLAGS['num_epochs'].present and common.FLAGS.num_epochs:
      print(
        f'note: --num_steps={common.FLAGS.num_steps} is given, so --num_epochs={common.FLAGS.num_epochs} is not used.',
        file=sys.stderr,
      )
    defaults['num_epochs'] = 0.0
  built = run_config.Experiment(
    method,
    common.build(run_config.RunConfig),
    common.build(loop.TrainConfig, **defaults),
    common.build(protocol.EvalConfig),
    common.build(self_label.SelfLabelConfig, self_label.SelfLabelConfig.PREFIX),
    method_config,
  )
  built.validate()
  return built


def main_of(method: str):
  """``main(argv)`` of the registered ``method``'s entry point (its flags defined here): the flags' experiment,
  run by :func:`unsupervised_jax.runner.learned.run` (data loaded once, the method from the registry)."""
  define(method)

  def main(argv):
    del argv
    learned.run(experiment(method))

  return main
