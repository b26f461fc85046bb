"""K-means on pixels. ``python -m experiments.kmeans [--flagfile=experiments/configs/kmeans_mnist.flags]``."""
from absl import flags

from experiments import common
from unsupervised_jax import experiment

flags.DEFINE_integer('n_clusters', 0, 'K; 0 = number of classes of the data set.', lower_bound=0)
flags.DEFINE_integer('n_init', 10, 'k-means++ restarts (run in parallel); the lowest inertia is kept.', lower_bound=1)
flags.DEFINE_integer('max_iter', 300, 'Lloyd iteration cap.', lower_bound=1)
flags.DEFINE_float('tol', 1e-4, 'Relative tolerance on the centre shift (as scikit-learn).', lower_bound=0.0)
flags.DEFINE_integer('pca_dim', 0, 'Cluster the first pca_dim principal components; 0 = raw pixels.', lower_bound=0)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  experiment.run_pixel_clustering(experiment.PixelClusteringConfig(
      method='kmeans', dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, protocol=FLAGS.protocol,
      n_clusters=FLAGS.n_clusters, pca_dim=FLAGS.pca_dim, seeds=common.seeds(),
      options={'n_init': FLAGS.n_init, 'max_iter': FLAGS.max_iter, 'tol': FLAGS.tol},
      workdir=FLAGS.workdir, results_dir=FLAGS.results_dir, results_name=FLAGS.results_name))


if __name__ == '__main__':
  common.run(main)
