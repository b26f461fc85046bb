"""The training core shared by every learned method.

``parallel``: the device mesh and the ``jit(shard_map)`` data-parallel step (batches drawn on device);
``loop``: the one trainer (logging, evaluation, checkpoints, resume); ``checkpoints``: orbax save/restore.
"""
