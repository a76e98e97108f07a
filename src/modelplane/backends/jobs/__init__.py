"""Batch jobs on this platform's executors.

* :mod:`.plan`: checks and shard plans before any shard runs, output claims and markers;
* :mod:`.models`: the job's model resolved, pinned and fetched;
* :mod:`.runner`: one shard attempt (read, sandbox, score, write) and its commit;
* :mod:`.template`: the warm process shard attempts fork from;
* :mod:`.local`, :mod:`.ray`: the executors the job controller drives.

Nothing is imported here: a shard's process imports only what it runs.
"""
