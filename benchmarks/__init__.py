"""alexbench's benchmark suite: the fast paths measured against the plain loops users write.

Run everything except time-to-accuracy with ``python -m benchmarks.run`` (``make bench``);
time-to-accuracy is its own command, ``python -m benchmarks.time_to_accuracy``.

How it stays honest on a shared 2-core CPU, where absolute speed drifts minute to minute:

- Every goal is a ratio of configurations measured *side by side in one run*.
  Each configuration lives in its own long-lived worker process (its model built once),
  and the parent asks the workers for one timed block each, in turn, round after round
  (ABAB...). Only one worker computes at a time; the others wait on a pipe.
- Every timed block starts with warm-up steps that are not timed (caches, allocator,
  the other worker's leftovers), and a first untimed round absorbs tracing and compiling.
- The reported figure is the median over rounds; ratios are the median of the
  per-round ratios (each pair measured minutes apart at most, under the same load).

Modules: :mod:`benchmarks.harness` (workers and rounds), :mod:`benchmarks.worker`
(what a worker can run), :mod:`benchmarks.baselines` (the plain PyTorch loop and plain
``model.fit``), :mod:`benchmarks.mfu` (GEMM peak and model-FLOP utilisation),
:mod:`benchmarks.profiles` (where the time goes), :mod:`benchmarks.trainrun` (one
``alexbench.train.train`` run in a fresh process), :mod:`benchmarks.run` (the suite),
:mod:`benchmarks.time_to_accuracy` and :mod:`benchmarks.recipes` (test accuracy per PFLOP
of training compute for candidate ``alexnet_cifar`` recipes); :mod:`benchmarks.arrays` (the image arrays the parent
writes and the workers map) and :mod:`benchmarks.process` (a worker's CPU time and peak
RSS) sit below all of them, so no two modules import each other.
"""
