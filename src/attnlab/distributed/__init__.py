"""Profiling a data set in shards: resumable on one machine, spread over Ray workers when asked.

* :mod:`~attnlab.distributed.shards` reads a JSONL data set and cuts it into fixed shards;
* :mod:`~attnlab.distributed.partials` computes, writes and merges each shard's per-head sums and counts;
* :mod:`~attnlab.distributed.ray_pool` runs shards on a pool of Ray actors (the ``distributed`` extra);
* :mod:`~attnlab.distributed.job` ties them into :func:`~attnlab.distributed.job.profile_dataset`.
"""
