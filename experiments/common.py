"""Flags shared by every entry point (data, protocol, seeds, output places)."""
from absl import flags

from unsupervised_jax import data

flags.DEFINE_string('dataset', 'digits',
                    f'One of {", ".join(sorted(data.DATASETS))}, or the path of an .npz with x_<split>/y_<split>.')
flags.DEFINE_string('data_dir', None, f'Local data directory (also tfds data_dir); default ${data.DATA_DIR_ENV}.')
flags.DEFINE_enum('protocol', 'all', ['all', 'train->test'],
                  "'all': fit and score on train+test (as MiCE); 'train->test': fit on train, score test.")
flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds; metrics are reported as mean ± std over them.')
flags.DEFINE_string('workdir', None, 'Output directory; default runs/<method>_<dataset>.')
flags.DEFINE_string('results_dir', None, 'If set, also write <results_dir>/<results_name>.json.')
flags.DEFINE_string('results_name', None, 'Name of the results record; default <method>_<dataset>.')

FLAGS = flags.FLAGS


def seeds():
  try:
    return [int(s) for s in FLAGS.seeds]
  except ValueError:
    raise flags.ValidationError(f'--seeds must be integers, got {FLAGS.seeds}') from None


def run(main):
  """``app.run(main)``, turning the library's ``ValueError`` (bad config or data) into one clear line."""
  import sys

  from absl import app

  def guarded(argv):
    from absl import logging
    logging.set_verbosity(logging.WARNING)  # orbax and XLA chatter would bury the progress bar
    try:
      return main(argv)
    except ValueError as error:
      print(f'error: {error}', file=sys.stderr)
      sys.exit(2)

  app.run(guarded)
