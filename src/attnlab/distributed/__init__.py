"""Jobs over many texts or prompts in shards: resumable on one machine, spread over Ray workers when asked.

* :mod:`~attnlab.distributed.shards` reads a JSONL data set and cuts it into fixed shards;
* :mod:`~attnlab.distributed.partials` computes, writes and merges each shard's per-head sums and counts;
* :mod:`~attnlab.distributed.ray_pool` runs shards on a pool of Ray actors (the ``distributed`` extra);
* :mod:`~attnlab.distributed.job` runs any job's shards resumably (:func:`~attnlab.distributed.job.run_job`) and
  profiles a data set (:func:`~attnlab.distributed.job.profile_dataset`);
* :mod:`~attnlab.distributed.eval_job` evaluates a steering method over many prompts
  (:func:`~attnlab.distributed.eval_job.eval_dataset`).
"""
