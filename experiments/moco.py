"""MoCo with the poster's small ConvNet. ``python -m experiments.moco --flagfile=experiments/configs/moco_mnist.flags``."""
from absl import flags

from experiments import common
from experiments import train_flags
from unsupervised_jax import experiment
from unsupervised_jax.methods import moco

flags.DEFINE_integer('queue_size', 4096, 'Queue length K, in keys (a multiple of the global batch).')
flags.DEFINE_float('momentum', 0.99, 'EMA momentum of the key encoder, in [0, 1).')
flags.DEFINE_enum('momentum_schedule', 'constant', ['constant', 'cosine'],
                  "EMA momentum schedule ('cosine': from --momentum up to 1 over the run, as BYOL).")
flags.DEFINE_float('temperature', 0.1, 'InfoNCE temperature, > 0.')
flags.DEFINE_float('learning_rate', 1e-3, 'Adam learning rate.')
flags.DEFINE_integer('feature_dim', 128, 'Feature size.')
flags.DEFINE_bool('mlp_head', False, 'MoCo v2 MLP projection head.')
flags.DEFINE_enum('view', 'digits', sorted(moco.VIEWS), 'Augmentation family of the two views.')
flags.DEFINE_enum('conv_implementation', 'auto', ['auto', 'xla', 'matmul'],
                  "Convolution: 'auto' = matrix products on CPU (faster there), XLA's elsewhere.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = moco.MoCoConfig(queue_size=FLAGS.queue_size, momentum=FLAGS.momentum,
                           momentum_schedule=FLAGS.momentum_schedule, num_steps=FLAGS.num_steps,
                           temperature=FLAGS.temperature,
                           learning_rate=FLAGS.learning_rate, feature_dim=FLAGS.feature_dim,
                           mlp_head=FLAGS.mlp_head, view=FLAGS.view, conv_implementation=FLAGS.conv_implementation)
  config.validate(FLAGS.batch_size)  # before any file is written
  experiment.run_learned(train_flags.run_config('moco'),
                         lambda image_shape: moco.MoCo(config, image_shape, FLAGS.batch_size))


if __name__ == '__main__':
  common.run(main)
