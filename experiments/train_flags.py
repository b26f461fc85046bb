"""Flags shared by the learned methods (training loop and evaluation)."""
from absl import flags

from experiments import common
from unsupervised_jax import experiment

flags.DEFINE_integer('num_steps', 1000, 'Training steps.')
flags.DEFINE_integer('batch_size', 256, 'Global batch size (a multiple of the device count).')
flags.DEFINE_integer('log_every', 100, 'Steps between metric lines in metrics.jsonl.')
flags.DEFINE_integer('eval_every', 0, 'Steps between evaluations during training; 0 = at the end only.')
flags.DEFINE_integer('checkpoint_every', 1000, 'Steps between checkpoints (the run resumes from the latest).')
flags.DEFINE_integer('keep_checkpoints', 3, 'Checkpoints kept.')
flags.DEFINE_integer('num_devices', 0, 'Devices to use; 0 = all.')
flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() first (TPU pods, multi-node GPU).')
flags.DEFINE_enum('cluster_method', 'gmm', ['gmm', 'kmeans'], 'Clustering of the learned codes.')
flags.DEFINE_string('covariance_type', 'full', 'GMM covariance type on the codes.')
flags.DEFINE_integer('cluster_n_init', 1, 'Clustering restarts.')
flags.DEFINE_enum('manifold', 'none', ['none', 'umap'], "Manifold step on the codes before clustering ('umap': N2D).")
flags.DEFINE_integer('manifold_neighbors', 20, 'UMAP neighbours.')
flags.DEFINE_integer('n_clusters', 0, 'Clusters; 0 = number of classes.')
flags.DEFINE_integer('knn_k', 200, 'Neighbours of the kNN accuracy.')
flags.DEFINE_integer('self_label_steps', 0, 'Refine the clustering by self-labelling (fine-tune the encoder with a '
                     'cluster head on the confident pseudo-labels) for this many steps; 0 = off.')
flags.DEFINE_float('self_label_fraction', 0.5, 'Share of each cluster kept as pseudo-labels, most confident first.')
flags.DEFINE_integer('self_label_neighbors', 20, 'Nearest neighbours (in code space) whose clusters vote for confidence.')
flags.DEFINE_float('self_label_threshold', 0.0, 'Self-labelling: the other images join, trained towards the '
                   "classifier's own prediction, once its probability exceeds this (SCAN uses 0.99); 0 = off.")
flags.DEFINE_bool('figures', True, 'Write the t-SNE of the codes and the method figures (--nofigures: skip).')
FLAGS = flags.FLAGS


def run_config(method: str) -> experiment.LearnedRunConfig:
  if FLAGS.multihost:
    import jax
    jax.distributed.initialize()
  options = {'n_init': FLAGS.cluster_n_init}
  if FLAGS.cluster_method == 'gmm':
    options['covariance_type'] = FLAGS.covariance_type
  return experiment.LearnedRunConfig(
      method=method, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, protocol=FLAGS.protocol,
      seeds=common.seeds(), num_steps=FLAGS.num_steps, batch_size=FLAGS.batch_size, log_every=FLAGS.log_every,
      eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every,
      keep_checkpoints=FLAGS.keep_checkpoints, num_devices=FLAGS.num_devices or None,
      cluster_method=FLAGS.cluster_method, cluster_options=options, manifold=FLAGS.manifold,
      manifold_neighbors=FLAGS.manifold_neighbors, n_clusters=FLAGS.n_clusters,
      knn_k=FLAGS.knn_k, workdir=FLAGS.workdir, results_dir=FLAGS.results_dir,
      results_name=FLAGS.results_name, figures=FLAGS.figures, self_label_steps=FLAGS.self_label_steps,
      self_label_fraction=FLAGS.self_label_fraction, self_label_neighbors=FLAGS.self_label_neighbors,
      self_label_threshold=FLAGS.self_label_threshold)
