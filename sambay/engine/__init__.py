"""The continuous-batching engine, one concern per file (nano-vllm / vLLM V1 layout):

* ``sampling.py``: :class:`SamplingParams`, the per-(seed, step) uniform numbers and the sampler;
* ``sequence.py``: one request's state (tokens, status, blocks, slot, timings);
* ``block_manager.py``: the pool of fixed-size K/V blocks (allocate, grow, free);
* ``scheduler.py``: waiting and running queues, admission, preemption, slot packing (no tensors);
* ``runner.py``: batch tensors, prefill, the decode step (CUDA graphs over a ladder of batch
  sizes), sampling on the device, one small device-to-host copy per step (no policy).

The public :class:`sambay.generate.Engine` drives them with one ``step()``.
"""
