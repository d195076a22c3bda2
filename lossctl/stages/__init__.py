"""The local engine, one module per stage, each depending only on the ones before it:

1. ``align`` (with ``chunks`` and ``join``): open the sources, align their rows into chunks
   (by position or joined by id), read ahead on a thread;
2. ``compute``: check a chunk's inputs, apply the NaN policy, call the kernel as the loss
   declares it (``kernel_options``, ``batched``, ``reliability``), and the gradient;
3. ``accumulate`` (with ``state``): add the chunk to the mergeable ``RunState``; save, load
   and merge states;
4. ``model``: the report from a run's metadata and state, and its signature.

``runner.Run`` wires the stages for one run and ``outputs`` writes its row outputs.
``lossctl.engine`` (which chooses between this engine and the Dask one) and
``lossctl.cluster`` sit above; nothing here imports them.
"""
